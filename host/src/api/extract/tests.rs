use super::has_nul_character;

#[test]
fn a_nul_is_found_only_as_an_escape_inside_a_string() {
    for (json, has_nul) in [
        (r#"{"reason": "a\u0000b"}"#, true),
        (r#"{"a\u0000": 1}"#, true),
        (r#"["\"", "\u0000"]"#, true),
        (r#"{"reason": "a\\u0000b"}"#, false),
        (r#"{"reason": "\\\"\u0001"}"#, false),
        (r#"{"u0000": "\\"}"#, false),
        ("[1, 2]", false),
    ] {
        assert_eq!(has_nul_character(json.as_bytes()), has_nul, "{json}");
    }
}
