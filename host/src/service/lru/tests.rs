use super::*;

#[test]
fn keeps_the_recently_used_within_the_budget() {
    let lru = Lru::new(10);
    lru.insert("a", 1, 4);
    lru.insert("b", 2, 4);
    assert_eq!(lru.get(&"a"), Some(1), "a is now used more recently than b");
    lru.insert("c", 3, 4);
    assert_eq!((lru.get(&"a"), lru.get(&"b"), lru.get(&"c")), (Some(1), None, Some(3)));
    assert_eq!(lru.bytes(), 8);
    assert_eq!(lru.insert("a", 9, 4), 1, "a kept value stays");
    assert_eq!(lru.insert("huge", 4, 11), 4, "too large to keep, but returned");
    assert_eq!((lru.get(&"huge"), lru.bytes()), (None, 8));
    lru.retain(|value| *value != 3);
    assert_eq!((lru.get(&"c"), lru.bytes()), (None, 4));
}
