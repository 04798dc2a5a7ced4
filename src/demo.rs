//! `kraliki serve --demo`: a demo organization for development, with random
//! passwords printed once. Production refuses to start while one exists.

use rand::Rng;

use crate::state::AppState;
use crate::store::calls::NewCall;
use crate::store::users::{NewUser, Role};
use crate::store::{self};

/// A random password that passes the policy.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Create the demo organization unless one exists; print the accounts.
pub async fn create(state: &AppState) -> anyhow::Result<()> {
    if store::organizations::demo_data_exists(&state.db).await? {
        eprintln!("demo organization already exists; its passwords were printed when it was made");
        return Ok(());
    }
    let org = store::organizations::create(&state.db, "Demo Call Center", true).await?;
    let org_id = org.org_id();
    let suffix = &org.id[..8];
    let people = [
        ("admin", "Demo Admin", Role::Admin),
        ("supervisor", "Demo Supervisor", Role::Supervisor),
        ("agent1", "Demo Agent One", Role::Agent),
        ("agent2", "Demo Agent Two", Role::Agent),
    ];
    eprintln!(
        "demo organization {} created; these passwords are shown only now:",
        org.id
    );
    let mut agents = Vec::new();
    for (local, name, role) in people {
        let email = format!("{local}+{suffix}@demo.kraliki.invalid");
        let password = random_password();
        let phc = crate::auth::hash_password(state, &password)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let user = store::users::create(
            &state.db,
            NewUser {
                org: &org_id,
                email: &email,
                display_name: name,
                role,
                password_hash: &phc,
                is_demo: true,
            },
        )
        .await?;
        if role == Role::Agent {
            agents.push(user.id.clone());
        }
        eprintln!("  {:<10} {email}  {password}", role.as_str());
    }
    for (i, status) in ["completed", "completed", "no_answer", "in_progress"]
        .iter()
        .enumerate()
    {
        store::calls::create(
            &state.db,
            &org_id,
            NewCall {
                agent_id: Some(&agents[i % agents.len()]),
                direction: if i % 2 == 0 { "inbound" } else { "outbound" },
                status,
                from_number: "+14155550100",
                to_number: "+14155550123",
            },
        )
        .await?;
    }
    Ok(())
}
