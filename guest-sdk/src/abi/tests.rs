use super::*;

fn valid() -> ManifestBuilder {
    Manifest::builder("order", 1)
        .state("NEW", "")
        .state("PAID", "")
        .terminal("DONE", TerminalStatus::Completed, "")
        .initial("NEW")
        .action("pay", &["NEW"], &["PAID"], "")
        .action("ship", &["PAID"], &["DONE"], "")
}

fn check(manifest: Manifest, expect: Result<(), ManifestError>) {
    assert_eq!(manifest.validate(), expect);
}

#[test]
fn accepts_a_valid_manifest() {
    check(valid().build(), Ok(()));
}

#[test]
fn refuses_structural_mistakes() {
    check(valid().initial("GONE").build(), Err(ManifestError::UnknownInitialState("GONE".into())));
    check(valid().initial("DONE").build(), Err(ManifestError::TerminalInitialState("DONE".into())));
    check(valid().state("NEW", "").build(), Err(ManifestError::DuplicateState("NEW".into())));
    check(
        valid().action("pay", &["PAID"], &["DONE"], "").build(),
        Err(ManifestError::DuplicateAction("pay".into())),
    );
    check(
        valid().action("noop", &[], &["NEW"], "").build(),
        Err(ManifestError::ActionWithoutSource("noop".into())),
    );
    check(
        valid().action("noop", &["NEW"], &[], "").build(),
        Err(ManifestError::ActionWithoutTarget("noop".into())),
    );
    check(
        valid().action("jump", &["NEW"], &["LIMBO"], "").build(),
        Err(ManifestError::UndeclaredTarget { action: "jump".into(), state: "LIMBO".into() }),
    );
    check(valid().migrates_from(1).build(), Err(ManifestError::BadMigrationSource(1)));
    check(Manifest::builder("order", 0).state("A", "").initial("A").build(), Err(ManifestError::ZeroVersion));
    check(Manifest::builder("order", 1).build(), Err(ManifestError::NoStates));
}

#[test]
fn refuses_actions_from_undeclared_or_terminal_states() {
    let from_terminal = valid().action("reopen", &["DONE"], &["NEW"], "").build();
    assert!(matches!(
        from_terminal.validate(),
        Err(ManifestError::BadActionSource { reason: "is terminal", .. })
    ));
    let from_nowhere = valid().action("jump", &["LIMBO"], &["NEW"], "").build();
    assert!(matches!(
        from_nowhere.validate(),
        Err(ManifestError::BadActionSource { reason: "is not declared", .. })
    ));
}

#[test]
fn refuses_unsafe_names() {
    for name in ["", "Order", "1order", "or der", "order/x", &"a".repeat(MAX_NAME_LEN + 1)] {
        let mut manifest = valid().build();
        manifest.name = name.into();
        assert_eq!(manifest.validate(), Err(ManifestError::BadName(name.into())), "{name:?}");
    }
    check(valid().state("a b", "").build(), Err(ManifestError::BadName("a b".into())));
    check(valid().action("x/y", &["NEW"], &["PAID"], "").build(), Err(ManifestError::BadName("x/y".into())));
}

#[test]
fn allowed_actions_follow_declaration_order() {
    let manifest = valid().action("cancel", &["NEW", "PAID"], &["DONE"], "").build();
    let names: Vec<_> = manifest.allowed_actions("NEW").map(|action| action.name.as_str()).collect();
    assert_eq!(names, ["pay", "cancel"]);
}

#[test]
fn pack_round_trips() {
    assert_eq!(unpack(pack(0xdead_beef, 0x1234)), (0xdead_beef, 0x1234));
    assert_eq!(unpack(pack(u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
}

#[test]
fn outcomes_must_reach_declared_targets() {
    let manifest = valid().build();
    assert!(manifest.check_outcome(CallKind::Init, "NEW").is_ok());
    assert!(manifest.check_outcome(CallKind::Action("pay"), "PAID").is_ok());
    assert!(manifest.check_outcome(CallKind::Event, "DONE").is_ok());
    assert_eq!(
        manifest.check_outcome(CallKind::Event, "LIMBO"),
        Err(OutcomeError::Undeclared("LIMBO".into()))
    );
    assert!(matches!(manifest.check_outcome(CallKind::Init, "PAID"), Err(OutcomeError::NotATarget { .. })));
    assert!(manifest.check_outcome(CallKind::Migrate { from_terminal: false }, "PAID").is_ok());
    assert!(manifest.check_outcome(CallKind::Migrate { from_terminal: true }, "DONE").is_ok());
    let finishing = manifest.check_outcome(CallKind::Migrate { from_terminal: false }, "DONE");
    assert!(matches!(finishing, Err(OutcomeError::NotATarget { .. })));
    let reviving = manifest.check_outcome(CallKind::Migrate { from_terminal: true }, "NEW");
    assert!(matches!(reviving, Err(OutcomeError::NotATarget { .. })));
    assert!(matches!(
        manifest.check_outcome(CallKind::Action("pay"), "DONE"),
        Err(OutcomeError::NotATarget { .. })
    ));
}

#[test]
fn the_seed_follows_docs_abi_section_8() {
    // 00000000-0000-7000-8000-000000000001; the values were computed independently
    // (Python's hashlib), and revision 1's is the test vector in docs/abi.md.
    let id = [0, 0, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(seed(&id, 1), 0x75d7_c346_27e4_8587);
    assert_eq!(seed(&id, 2), 0x0f6f_e86f_9d24_e0ec);
    let other =
        [0x01, 0x90, 0xb7, 0xa2, 0x3c, 0x4d, 0x7e, 0x5f, 0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b];
    assert_eq!(seed(&other, 7), 0xc089_7e6b_7a05_3d80);
}

#[test]
fn effects_open_free_keys_only() {
    let timer = |key: &str| Effect::Timer { key: key.into(), after_ms: 10 };
    let cancel = |key: &str| Effect::CancelTimer { key: key.into() };
    let open = |key: &str| key == "poll";
    assert_eq!(check_effects(&[timer("a"), timer("b")], open), Ok(()));
    assert_eq!(check_effects(&[timer("a"), timer("a")], open), Err(EffectError::KeyInUse("a".into())));
    assert_eq!(check_effects(&[timer("poll")], open), Err(EffectError::KeyInUse("poll".into())));
    // Cancelling first re-arms; cancelling what the same outcome set is refused.
    assert_eq!(check_effects(&[cancel("poll"), timer("poll")], open), Ok(()));
    assert_eq!(check_effects(&[timer("a"), cancel("a")], open), Err(EffectError::KeyInUse("a".into())));
    assert_eq!(check_effects(&[cancel("gone")], open), Ok(()), "cancelling what fired is no error");
    assert_eq!(check_effects(&[timer("a b")], open), Err(EffectError::BadKey("a b".into())));
    let task = Effect::Task(Task {
        key: "t".into(),
        name: "flights.reserve".into(),
        input: "{not json".into(),
        retry: None,
        attempt_timeout_ms: None,
        report_timeout_ms: None,
    });
    assert_eq!(check_effects(&[task], open), Err(EffectError::InputNotJson("t".into())));
    let child =
        Effect::Child { key: "c".into(), definition: "Not A Name".into(), version: None, input: "{}".into() };
    assert_eq!(check_effects(&[child], open), Err(EffectError::BadName("Not A Name".into())));
}

#[test]
fn refuses_manifests_beyond_the_caps() {
    let mut many_states = valid();
    for idx in 0..MAX_STATES {
        many_states = many_states.state(&alloc::format!("S{idx}"), "");
    }
    check(
        many_states.build(),
        Err(ManifestError::TooMany { what: "states", count: MAX_STATES + 3, limit: MAX_STATES }),
    );
    let mut many_actions = valid();
    for idx in 0..MAX_ACTIONS {
        many_actions = many_actions.action(&alloc::format!("a{idx}"), &["NEW"], &["PAID"], "");
    }
    check(
        many_actions.build(),
        Err(ManifestError::TooMany { what: "actions", count: MAX_ACTIONS + 2, limit: MAX_ACTIONS }),
    );
    let sources = alloc::vec!["NEW"; MAX_EDGES];
    check(
        valid().action("everywhere", &sources, &["PAID"], "").build(),
        Err(ManifestError::TooMany { what: "edges", count: MAX_EDGES + 5, limit: MAX_EDGES }),
    );
    let wordy = "w".repeat(MAX_DESCRIPTION_LEN + 1);
    check(
        valid().state("LATE", &wordy).build(),
        Err(ManifestError::DescriptionTooLong { name: "LATE".into(), len: MAX_DESCRIPTION_LEN + 1 }),
    );
    // At the caps exactly, a manifest is fine.
    let mut full = Manifest::builder("order", 1).initial("S0");
    for idx in 0..MAX_STATES {
        full = full.state(&alloc::format!("S{idx}"), &"d".repeat(MAX_DESCRIPTION_LEN));
    }
    let per_action = MAX_EDGES / MAX_ACTIONS;
    let sources: Vec<String> = (0..per_action - 1).map(|idx| alloc::format!("S{idx}")).collect();
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    for idx in 0..MAX_ACTIONS {
        full = full.action(&alloc::format!("a{idx}"), &sources, &["S0"], "");
    }
    check(full.build(), Ok(()));
}

#[test]
fn effects_are_capped() {
    let timers: Vec<Effect> =
        (0..=MAX_EFFECTS).map(|idx| Effect::Timer { key: alloc::format!("t{idx}"), after_ms: 1 }).collect();
    assert_eq!(check_effects(&timers, |_| false), Err(EffectError::TooMany(MAX_EFFECTS + 1)));
    assert_eq!(check_effects(&timers[..MAX_EFFECTS], |_| false), Ok(()));
}
