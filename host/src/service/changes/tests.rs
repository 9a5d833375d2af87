use super::*;
use crate::model::{Instance, Revision, Status};

fn committed(id: InstanceId, revision: i64) -> InstanceView {
    let instance = Instance::sample(id, revision, Status::Running);
    InstanceView { instance, allowed_actions: Vec::new() }
}

/// The instance `waiter` is handed next, which must be one this process committed.
async fn handed(waiter: &mut Subscription) -> Arc<InstanceView> {
    match waiter.changed().await {
        Changed::Committed(view) => view,
        Changed::Elsewhere => panic!("woken by another host's change"),
    }
}

#[tokio::test]
async fn every_waiter_is_handed_the_one_committed_copy() {
    let changes = Changes::default();
    let id = InstanceId::generate();
    let (mut first, mut second) = (changes.subscribe(id), changes.subscribe(id));
    changes.publish(&committed(id, 2));
    let (seen_first, seen_second) = (handed(&mut first).await, handed(&mut second).await);
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
    assert_eq!(handed(&mut waiter).await.instance.revision, Revision(3));
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

#[tokio::test]
async fn another_hosts_change_wakes_the_waiters_on_that_instance_once() {
    let changes = Changes::default();
    let (id, other) = (InstanceId::generate(), InstanceId::generate());
    let (mut waiter, mut bystander) = (changes.subscribe(id), changes.subscribe(other));
    changes.heard(id);
    assert!(matches!(waiter.changed().await, Changed::Elsewhere));
    assert!(!waiter.receiver.has_changed().unwrap_or(true), "woken once");
    assert!(!bystander.receiver.has_changed().unwrap_or(true), "another instance's waiter sleeps on");
    changes.publish(&committed(id, 2));
    assert_eq!(handed(&mut waiter).await.instance.revision, Revision(2), "then this process's commit");
    changes.heard_everything();
    assert!(matches!(bystander.changed().await, Changed::Elsewhere));
    // A late subscriber is not woken by what was heard before it came.
    let late = changes.subscribe(id);
    assert!(!late.receiver.has_changed().unwrap_or(true));
    assert!(matches!(waiter.changed().await, Changed::Elsewhere));
}
