//! Table-driven tests, through the ABI object the server uses.

use vespene_plugin_api::serde_json::{json, Value};
use vespene_plugin_api::testkit::{self, TestAuthorization};
use vespene_plugin_api::{AccessRequest, UserInfo};

use super::{Ownership, ACTIONS, KINDS, NAME};

/// The cast, by letter. Object fields below point at them:
/// `S` a superuser, `C` the object's creator, `O` a member of its owner
/// group, `L` a member of its launch group, `B` the creator of the build
/// (builds only), `X` someone else, `A` anonymous.
const CAST: &str = "SCOLBXA";

fn who(letter: char) -> Option<UserInfo> {
    let (id, superuser, groups): (i64, bool, &[&str]) = match letter {
        'S' => (1, true, &[]),
        'C' => (2, false, &["others"]),
        'O' => (3, false, &["owners"]),
        'L' => (4, false, &["launchers"]),
        'X' => (5, false, &["others", "ops"]),
        'B' => (6, false, &[]),
        'A' => return None,
        _ => unreachable!("unknown cast member {letter}"),
    };
    Some(UserInfo {
        id,
        username: format!("user{id}"),
        superuser,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    })
}

/// The object of a matrix request for `kind`.
fn object_of(kind: &str) -> Value {
    match kind {
        // Build objects carry their project's fields and their own creator.
        "build" => json!({"id": 10, "created_by": 2, "owner_groups": ["owners"], "launch_groups": ["launchers"],
                          "build_created_by": 6}),
        // C's own user row. Its created_by and owner_groups must grant nothing.
        "user" => json!({"id": 2, "created_by": 5, "owner_groups": ["owners"], "launch_groups": ["launchers"],
                         "changes": ["email", "password"]}),
        _ => json!({"id": 10, "created_by": 2, "owner_groups": ["owners"], "launch_groups": ["launchers"]}),
    }
}

fn request(user: Option<UserInfo>, kind: &str, action: &str, object: Option<Value>) -> AccessRequest {
    AccessRequest { user, action: action.into(), kind: kind.into(), object }
}

fn plugin(config: Value) -> TestAuthorization {
    testkit::authorization::<Ownership>(config).unwrap()
}

fn check(plugin: &TestAuthorization, req: &AccessRequest) -> Result<bool, String> {
    plugin.check(req)
}

/// `candidates` is a JSON array of objects.
fn filter(plugin: &TestAuthorization, req: &AccessRequest, candidates: &Value) -> Result<Vec<i64>, String> {
    plugin.filter_list(req, candidates.as_array().expect("the candidates are a JSON array"))
}

/// The letters of the cast allowed `action` on the matrix object of `kind`.
fn allowed(plugin: &TestAuthorization, kind: &str, action: &str) -> String {
    let object = (action != "list" && action != "create").then(|| object_of(kind));
    CAST.chars().filter(|&w| check(plugin, &request(who(w), kind, action, object.clone())).unwrap()).collect()
}

/// Kind, action, who is allowed with `filter_view = false`, and with `true`.
const MATRIX: &[(&str, &str, &str, &str)] = &[
    ("project", "list", "SCOLBX", "SCOLBX"),
    ("project", "view", "SCOLBX", "SCOL"),
    ("project", "create", "SCOLBX", "SCOLBX"),
    ("project", "edit", "SCO", "SCO"),
    ("project", "delete", "SCO", "SCO"),
    ("project", "start", "SCOL", "SCOL"),
    ("project", "stop", "S", "S"),
    ("project", "use", "S", "S"),
    ("project", "approve", "S", "S"),
    ("build", "list", "SCOLBX", "SCOLBX"),
    ("build", "view", "SCOLBX", "SCOLB"),
    ("build", "create", "S", "S"),
    ("build", "edit", "S", "S"),
    ("build", "delete", "SCO", "SCO"),
    ("build", "start", "S", "S"),
    ("build", "stop", "SCOLB", "SCOLB"),
    ("build", "use", "S", "S"),
    ("build", "approve", "S", "S"),
    ("pipeline", "list", "SCOLBX", "SCOLBX"),
    ("pipeline", "view", "SCOLBX", "SCOLBX"),
    ("pipeline", "create", "SCOLBX", "SCOLBX"),
    ("pipeline", "edit", "SCO", "SCO"),
    ("pipeline", "delete", "SCO", "SCO"),
    ("pipeline", "start", "S", "S"),
    ("pipeline", "stop", "S", "S"),
    // Not shared: its owners only.
    ("pipeline", "use", "SCO", "SCO"),
    // Its owners approve its waiting stages.
    ("pipeline", "approve", "SCO", "SCO"),
    ("stage", "list", "SCOLBX", "SCOLBX"),
    ("stage", "view", "SCOLBX", "SCOLBX"),
    ("stage", "create", "S", "S"),
    ("stage", "edit", "S", "S"),
    ("stage", "delete", "S", "S"),
    ("stage", "start", "S", "S"),
    ("stage", "stop", "S", "S"),
    ("stage", "use", "SCO", "SCO"),
    ("stage", "approve", "S", "S"),
    ("worker_pool", "list", "SCOLBX", "SCOLBX"),
    ("worker_pool", "view", "SCOLBX", "SCOLBX"),
    ("worker_pool", "create", "S", "S"),
    ("worker_pool", "edit", "S", "S"),
    ("worker_pool", "delete", "S", "S"),
    ("worker_pool", "start", "S", "S"),
    ("worker_pool", "stop", "S", "S"),
    ("worker_pool", "use", "SCO", "SCO"),
    ("worker_pool", "approve", "S", "S"),
    ("snippet", "list", "SCOLBX", "SCOLBX"),
    ("snippet", "view", "SCOLBX", "SCOLBX"),
    ("snippet", "create", "SCOLBX", "SCOLBX"),
    ("snippet", "edit", "SCO", "SCO"),
    ("snippet", "delete", "SCO", "SCO"),
    ("snippet", "start", "S", "S"),
    ("snippet", "stop", "S", "S"),
    ("snippet", "use", "SCO", "SCO"),
    ("snippet", "approve", "S", "S"),
    ("variable_set", "list", "SCOLBX", "SCOLBX"),
    ("variable_set", "view", "SCOLBX", "SCOLBX"),
    ("variable_set", "create", "SCOLBX", "SCOLBX"),
    ("variable_set", "edit", "SCO", "SCO"),
    ("variable_set", "delete", "SCO", "SCO"),
    ("variable_set", "start", "S", "S"),
    ("variable_set", "stop", "S", "S"),
    ("variable_set", "use", "SCO", "SCO"),
    ("variable_set", "approve", "S", "S"),
    ("ssh_key", "list", "SCOLBX", "SCOLBX"),
    ("ssh_key", "view", "SCOLBX", "SCO"),
    ("ssh_key", "create", "SCOLBX", "SCOLBX"),
    ("ssh_key", "edit", "SCO", "SCO"),
    ("ssh_key", "delete", "SCO", "SCO"),
    ("ssh_key", "start", "S", "S"),
    ("ssh_key", "stop", "S", "S"),
    ("ssh_key", "use", "SCO", "SCO"),
    ("ssh_key", "approve", "S", "S"),
    ("service_login", "list", "SCOLBX", "SCOLBX"),
    ("service_login", "view", "SCOLBX", "SCO"),
    ("service_login", "create", "SCOLBX", "SCOLBX"),
    ("service_login", "edit", "SCO", "SCO"),
    ("service_login", "delete", "SCO", "SCO"),
    ("service_login", "start", "S", "S"),
    ("service_login", "stop", "S", "S"),
    ("service_login", "use", "SCO", "SCO"),
    ("service_login", "approve", "S", "S"),
    ("organization", "list", "SCOLBX", "SCOLBX"),
    ("organization", "view", "SCOLBX", "SCOLBX"),
    ("organization", "create", "S", "S"),
    ("organization", "edit", "S", "S"),
    ("organization", "delete", "S", "S"),
    ("organization", "start", "S", "S"),
    ("organization", "stop", "S", "S"),
    ("organization", "use", "S", "S"),
    ("organization", "approve", "S", "S"),
    // The object is C's own row: only C (and superusers) see and edit it.
    ("user", "list", "SCOLBX", "SCOLBX"),
    ("user", "view", "SC", "SC"),
    ("user", "create", "S", "S"),
    ("user", "edit", "SC", "SC"),
    ("user", "delete", "S", "S"),
    ("user", "start", "S", "S"),
    ("user", "stop", "S", "S"),
    ("user", "use", "S", "S"),
    ("user", "approve", "S", "S"),
    ("group", "list", "SCOLBX", "SCOLBX"),
    ("group", "view", "SCOLBX", "SCOLBX"),
    ("group", "create", "S", "S"),
    ("group", "edit", "S", "S"),
    ("group", "delete", "S", "S"),
    ("group", "start", "S", "S"),
    ("group", "stop", "S", "S"),
    ("group", "use", "S", "S"),
    ("group", "approve", "S", "S"),
    // C's token: its owner group grants nothing.
    ("api_token", "list", "SCOLBX", "SCOLBX"),
    ("api_token", "view", "SC", "SC"),
    ("api_token", "create", "SCOLBX", "SCOLBX"),
    ("api_token", "edit", "SC", "SC"),
    ("api_token", "delete", "SC", "SC"),
    ("api_token", "start", "S", "S"),
    ("api_token", "stop", "S", "S"),
    ("api_token", "use", "S", "S"),
    ("api_token", "approve", "S", "S"),
];

#[test]
fn the_matrix_covers_every_kind_and_action() {
    for kind in KINDS {
        for action in ACTIONS {
            let rows = MATRIX.iter().filter(|(k, a, _, _)| *k == kind && *a == action).count();
            assert_eq!(rows, 1, "{kind} {action}");
        }
    }
    assert_eq!(MATRIX.len(), KINDS.len() * ACTIONS.len());
}

#[test]
fn matrix_without_filter_view() {
    let plugin = plugin(json!({"filter_view": false}));
    for (kind, action, expected, _) in MATRIX {
        assert_eq!(allowed(&plugin, kind, action), *expected, "{action} {kind}");
    }
}

#[test]
fn matrix_with_filter_view_which_is_the_default() {
    for config in [json!({"filter_view": true}), json!({})] {
        let plugin = plugin(config.clone());
        for (kind, action, _, expected) in MATRIX {
            assert_eq!(allowed(&plugin, kind, action), *expected, "{action} {kind} with {config}");
        }
    }
}

#[test]
fn shared_objects_may_be_used_by_everyone_logged_in() {
    let plugin = plugin(json!({}));
    for kind in ["ssh_key", "service_login", "variable_set", "worker_pool", "pipeline", "stage", "snippet"] {
        let object = json!({"id": 10, "created_by": 2, "owner_groups": ["owners"], "shared": true});
        let users: String = CAST
            .chars()
            .filter(|&w| check(&plugin, &request(who(w), kind, "use", Some(object.clone()))).unwrap())
            .collect();
        assert_eq!(users, "SCOLBX", "use of a shared {kind}");
        // Sharing lets others use it, not change it (nor unshare it).
        let mut edit = object.clone();
        edit["changes"] = json!(["shared"]);
        assert!(!check(&plugin, &request(who('X'), kind, "edit", Some(edit))).unwrap(), "{kind}");
    }
    // Kinds nobody names are never used, shared or not.
    let object = json!({"id": 10, "created_by": 2, "shared": true});
    assert!(!check(&plugin, &request(who('C'), "project", "use", Some(object))).unwrap());
    // A shared key is listed to everyone even with filter_view.
    let filtered = plugin_with_filter();
    let candidates = json!([{"id": 1, "created_by": 99, "shared": true}, {"id": 2, "created_by": 99}]);
    let ids = filter(&filtered, &request(who('X'), "ssh_key", "list", None), &candidates).unwrap();
    assert_eq!(ids, vec![1]);
    // `filter_list` for `use` answers the usable candidates.
    let ids = filter(&plugin, &request(who('X'), "service_login", "use", None), &candidates).unwrap();
    assert_eq!(ids, vec![1]);
    let err = check(&plugin, &request(who('X'), "ssh_key", "use", Some(json!({"id": 1, "shared": "yes"}))));
    assert_eq!(err.unwrap_err(), "object.shared must be true or false, not \"yes\"");
}

fn plugin_with_filter() -> TestAuthorization {
    plugin(json!({"filter_view": true}))
}

#[test]
fn user_edits_never_raise_privileges() {
    let plugin = plugin(json!({}));
    // Who edits, whose row, and the `changes` (None: the field is absent).
    let cases: &[(char, i64, Option<Value>, bool)] = &[
        ('C', 2, Some(json!(["email", "password"])), true),
        ('C', 2, Some(json!(["first_name", "last_name", "username"])), true),
        ('C', 2, Some(json!([])), true),
        ('C', 2, Some(json!(["is_superuser"])), false),
        ('C', 2, Some(json!(["groups"])), false),
        ('C', 2, Some(json!(["email", "groups"])), false),
        ('C', 2, Some(json!(["password", "is_superuser", "groups"])), false),
        ('C', 2, Some(json!(["superuser"])), false),
        // Unknown changes could be anything: refused.
        ('C', 2, None, false),
        ('C', 2, Some(Value::Null), false),
        // Someone else's row, even harmless fields.
        ('X', 2, Some(json!(["email"])), false),
        ('O', 2, Some(json!(["password"])), false),
        ('X', 2, Some(json!(["groups"])), false),
        // Superusers manage privileges.
        ('S', 2, Some(json!(["is_superuser", "groups"])), true),
        ('S', 1, Some(json!(["is_superuser"])), true),
        ('A', 2, Some(json!(["email"])), false),
    ];
    for (editor, row, changes, expected) in cases {
        let mut object = json!({"id": row, "created_by": 5, "owner_groups": ["owners"]});
        if let Some(changes) = changes {
            object["changes"] = changes.clone();
        }
        let req = request(who(*editor), "user", "edit", Some(object));
        assert_eq!(check(&plugin, &req).unwrap(), *expected, "{editor} edits user {row} changing {changes:?}");
    }
}

/// Candidates for listings, every kind alike. For kind `user`, the ids are
/// the cast's ids: C is 2, O 3, L 4, X 5, B 6.
fn candidates() -> Value {
    json!([
        {"id": 1, "created_by": 2, "owner_groups": [], "launch_groups": []},
        {"id": 2, "created_by": 99, "owner_groups": ["owners"], "launch_groups": []},
        {"id": 3, "created_by": 99, "owner_groups": [], "launch_groups": ["launchers"]},
        {"id": 4, "created_by": 99, "owner_groups": ["qa"], "launch_groups": ["qa"], "build_created_by": 5},
        {"id": 5, "created_by": null},
        {"id": 6, "build_created_by": 6},
        {"name": "no id: never answered", "created_by": 2},
    ])
}

const ALL: &[i64] = &[1, 2, 3, 4, 5, 6];

/// Kind, then the ids listed to S, C, O, L, B, X and A with `filter_view`.
const FILTERED: &[(&str, [&[i64]; 7])] = &[
    ("project", [ALL, &[1], &[2], &[3], &[], &[], &[]]),
    ("build", [ALL, &[1], &[2], &[3], &[6], &[4], &[]]),
    ("ssh_key", [ALL, &[1], &[2], &[], &[], &[], &[]]),
    ("service_login", [ALL, &[1], &[2], &[], &[], &[], &[]]),
    ("user", [ALL, &[2], &[3], &[4], &[6], &[5], &[]]),
    ("api_token", [ALL, &[1], &[], &[], &[], &[], &[]]),
    ("pipeline", [ALL, ALL, ALL, ALL, ALL, ALL, &[]]),
    ("stage", [ALL, ALL, ALL, ALL, ALL, ALL, &[]]),
    ("worker_pool", [ALL, ALL, ALL, ALL, ALL, ALL, &[]]),
    ("snippet", [ALL, ALL, ALL, ALL, ALL, ALL, &[]]),
    ("variable_set", [ALL, ALL, ALL, ALL, ALL, ALL, &[]]),
    ("organization", [ALL, ALL, ALL, ALL, ALL, ALL, &[]]),
    ("group", [ALL, ALL, ALL, ALL, ALL, ALL, &[]]),
];

#[test]
fn listings_with_filter_view_which_is_the_default() {
    assert_eq!(FILTERED.len(), KINDS.len());
    for config in [json!({"filter_view": true}), json!({})] {
        let plugin = plugin(config.clone());
        for (kind, expected) in FILTERED {
            for (letter, ids) in "SCOLBXA".chars().zip(expected) {
                let listed = filter(&plugin, &request(who(letter), kind, "list", None), &candidates()).unwrap();
                assert_eq!(listed, *ids, "{kind} listed to {letter} with {config}");
            }
        }
    }
}

#[test]
fn listings_without_filter_view_hide_only_other_peoples_tokens_and_user_rows() {
    let plugin = plugin(json!({"filter_view": false}));
    let users = FILTERED.iter().find(|(k, _)| *k == "user").unwrap().1;
    for kind in KINDS {
        for (n, letter) in "SCOLBXA".chars().enumerate() {
            let listed = filter(&plugin, &request(who(letter), kind, "list", None), &candidates()).unwrap();
            let expected: &[i64] = match (letter, kind) {
                ('A', _) => &[],
                ('C', "api_token") => &[1],
                ('S', _) => ALL,
                (_, "api_token") => &[],
                (_, "user") => users[n],
                _ => ALL,
            };
            assert_eq!(listed, expected, "{kind} listed to {letter}");
        }
    }
}

#[test]
fn filtering_for_other_actions_checks_each_candidate() {
    let plugin = plugin(json!({"filter_view": false}));
    let cases: &[(&str, &str, char, &[i64])] = &[
        ("project", "start", 'C', &[1]),
        ("project", "start", 'O', &[2]),
        ("project", "start", 'L', &[3]),
        ("project", "start", 'X', &[]),
        ("project", "edit", 'L', &[]),
        ("build", "stop", 'X', &[4]),
        ("build", "stop", 'B', &[6]),
        ("build", "delete", 'X', &[]),
        ("user", "view", 'O', &[3]),
        ("project", "view", 'X', ALL),
        ("project", "start", 'S', ALL),
        ("project", "start", 'A', &[]),
    ];
    for (kind, action, letter, expected) in cases {
        let listed = filter(&plugin, &request(who(*letter), kind, action, None), &candidates()).unwrap();
        assert_eq!(listed, *expected, "{action} {kind} for {letter}");
    }
    // With the default filter_view, X views no project of others.
    let listed = filter(&self::plugin(json!({})), &request(who('X'), "project", "view", None), &candidates()).unwrap();
    assert_eq!(listed, Vec::<i64>::new());
}

#[test]
fn unknown_actions_and_kinds_are_for_superusers_only() {
    let plugin = plugin(json!({}));
    let object = Some(object_of("project"));
    for (kind, action) in [("project", "teleport"), ("artifact", "view"), ("artifact", "list"), ("Project", "view")] {
        for letter in "COLBXA".chars() {
            let req = request(who(letter), kind, action, object.clone());
            assert!(!check(&plugin, &req).unwrap(), "{action} {kind} for {letter}");
        }
        assert!(check(&plugin, &request(who('S'), kind, action, object.clone())).unwrap(), "{action} {kind}");
    }
    let listed = filter(&plugin, &request(who('C'), "artifact", "list", None), &candidates()).unwrap();
    assert!(listed.is_empty());
}

#[test]
fn requests_breaking_the_contract_fail_naming_the_field() {
    let plugin = plugin(json!({}));
    let cases: &[(&str, &str, Option<Value>, &str)] = &[
        ("project", "edit", None, "the request to edit a project carries no object"),
        ("user", "view", None, "the request to view a user carries no object"),
        ("project", "view", Some(json!(7)), "the object must be a JSON object, not 7"),
        (
            "project",
            "edit",
            Some(json!({"id": 1, "created_by": "2"})),
            "object.created_by must be a user id or null, not \"2\"",
        ),
        (
            "project",
            "edit",
            Some(json!({"id": 1, "owner_groups": [3]})),
            "object.owner_groups must list group names (strings), not 3",
        ),
        (
            "project",
            "start",
            Some(json!({"id": 1, "launch_groups": "qa"})),
            "object.launch_groups must be a list of group names, not \"qa\"",
        ),
        (
            "build",
            "stop",
            Some(json!({"id": 1, "build_created_by": true})),
            "object.build_created_by must be a user id or null, not true",
        ),
        ("user", "view", Some(json!({"created_by": 2})), "object.id (the user's id) is required for kind user"),
        (
            "user",
            "edit",
            Some(json!({"id": 2, "changes": "email"})),
            "object.changes must be a list of field names, not \"email\"",
        ),
        (
            "user",
            "edit",
            Some(json!({"id": 2, "changes": ["email", 1]})),
            "object.changes must list field names (strings), not 1",
        ),
    ];
    for (kind, action, object, expected) in cases {
        let err = check(&plugin, &request(who('C'), kind, action, object.clone())).unwrap_err();
        assert_eq!(err, *expected, "{action} {kind} {object:?}");
    }
    let bad = json!([{"id": 1, "owner_groups": [1]}]);
    let err = filter(&plugin, &request(who('C'), "project", "start", None), &bad).unwrap_err();
    assert_eq!(err, "object.owner_groups must list group names (strings), not 1");
    let plugin = self::plugin(json!({"filter_view": true}));
    let err = filter(&plugin, &request(who('C'), "project", "list", None), &bad).unwrap_err();
    assert_eq!(err, "object.owner_groups must list group names (strings), not 1");
}

#[test]
fn null_creators_and_missing_groups_grant_nothing() {
    let plugin = plugin(json!({"filter_view": true}));
    let orphan = json!({"id": 1, "created_by": null, "owner_groups": null});
    for action in ["view", "edit", "delete", "start"] {
        assert!(!check(&plugin, &request(who('C'), "project", action, Some(orphan.clone()))).unwrap(), "{action}");
    }
    // A user with no groups is in no empty group.
    let nobody = Some(UserInfo { id: 0, groups: vec![], ..Default::default() });
    assert!(!check(&plugin, &request(nobody, "project", "edit", Some(json!({"id": 1})))).unwrap());
}

#[test]
fn configuration() {
    let req = request(who('X'), "project", "view", Some(object_of("project")));
    let configs = [(Value::Null, true), (json!({}), true), (json!({"filter_view": false}), false)];
    for (cfg, filter_view) in configs {
        let plugin = plugin(cfg.clone());
        assert_eq!(!check(&plugin, &req).unwrap(), filter_view, "{cfg}");
    }
    // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
    // the typed loader never sends that text (it sends null as "").
    let raw = testkit::authorization_from::<Ownership>("null").unwrap();
    assert!(!raw.check(testkit::to_json(&req).as_rstr()).into_result().unwrap(), "null");
    let cases = [
        (json!({"filter_view": "yes"}), "parameter 'filter_view' must be true or false, not \"yes\"".to_string()),
        (json!({"filter_view": 1}), "parameter 'filter_view' must be true or false, not 1".to_string()),
        (json!({"filterview": true}), format!("unknown parameter 'filterview' for authorization plugin {NAME}")),
        (
            json!(["filter_view"]),
            format!("the parameters of authorization plugin {NAME} must be a table, not [\"filter_view\"]"),
        ),
    ];
    for (cfg, expected) in cases {
        assert_eq!(testkit::authorization::<Ownership>(cfg.clone()).err().unwrap(), expected, "{cfg}");
    }
}
