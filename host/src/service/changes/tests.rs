use super::*;
use crate::model::{Instance, Revision, Status};

fn committed(id: InstanceId, revision: i64) -> InstanceView {
    let instance = Instance::sample(id, revision, Status::Running);
    InstanceView { instance, allowed_actions: Vec::new() }
}

#[tokio::test]
async fn every_waiter_is_handed_the_one_committed_copy() {
    let changes = Changes::default();
    let id = InstanceId::generate();
    let (mut first, mut second) = (changes.subscribe(id), changes.subscribe(id));
    changes.publish(&committed(id, 2));
    let (seen_first, seen_second) = (first.changed().await, second.changed().await);
    assert!(Arc::ptr_eq(&seen_first, &seen_second), "one copy, not one per waiter");
    assert_eq!(seen_first.instance.revision, Revision(2));
}

#[tokio::test]
async fn an_older_revision_handed_over_late_wakes_nobody() {
    let changes = Changes::default();
    let id = InstanceId::generate();
    let mut waiter = changes.subscribe(id);
    changes.publish(&committed(id, 3));
    changes.publish(&committed(id, 2));
    assert_eq!(waiter.changed().await.instance.revision, Revision(3));
    assert!(!waiter.receiver.has_changed().unwrap_or(true), "revision 2 came too late to count");
}

#[test]
fn an_instance_nobody_waits_on_is_not_kept() {
    let changes = Changes::default();
    let id = InstanceId::generate();
    changes.publish(&committed(id, 2));
    assert!(lock(&changes.watched).is_empty());
    let (first, second) = (changes.subscribe(id), changes.subscribe(id));
    drop(first);
    assert_eq!(lock(&changes.watched).len(), 1, "the second still waits");
    drop(second);
    assert!(lock(&changes.watched).is_empty());
}
