//! The permission table: what each role may do, in one place.

use crate::store::users::Role;

/// Things a request may want to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See one's own calls.
    ViewOwnCalls,
    /// See every call of the organization.
    ViewAllCalls,
    /// See the organization's users.
    ViewUsers,
    /// Create users and change roles.
    ManageUsers,
    /// Change organization settings (e.g. the second-factor policy).
    ManageOrganization,
    /// Read security events.
    ViewSecurityEvents,
    /// Read the audit trail.
    ViewAudit,
    /// Read the deployment's metrics (only admins of the operator
    /// organization get past the second check in the handler).
    ViewMetrics,
}

impl Permission {
    /// Stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewOwnCalls => "view_own_calls",
            Permission::ViewAllCalls => "view_all_calls",
            Permission::ViewUsers => "view_users",
            Permission::ManageUsers => "manage_users",
            Permission::ManageOrganization => "manage_organization",
            Permission::ViewSecurityEvents => "view_security_events",
            Permission::ViewAudit => "view_audit",
            Permission::ViewMetrics => "view_metrics",
        }
    }
}

/// Whether `role` holds `permission`.
pub fn allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => true,
        Role::Supervisor => matches!(permission, ViewOwnCalls | ViewAllCalls | ViewUsers),
        Role::Agent => matches!(permission, ViewOwnCalls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert!(allows(Role::Agent, Permission::ViewOwnCalls));
        assert!(!allows(Role::Agent, Permission::ViewAllCalls));
        assert!(!allows(Role::Agent, Permission::ViewUsers));
        assert!(allows(Role::Supervisor, Permission::ViewAllCalls));
        assert!(!allows(Role::Supervisor, Permission::ManageUsers));
        assert!(allows(Role::Admin, Permission::ManageOrganization));
        assert!(allows(Role::Admin, Permission::ViewMetrics));
        assert!(!allows(Role::Supervisor, Permission::ViewMetrics));
    }
}
