use super::*;

fn ids(n: usize) -> Vec<InstanceId> {
    (0..n).map(|_| InstanceId::generate()).collect()
}

#[test]
fn a_payload_names_the_instances_and_whether_effects_wait() {
    let instances = ids(3);
    let queued = Queued { instances: instances.clone(), effects: true, everything: false };
    let payloads = queued.payloads("me");
    assert_eq!(payloads.len(), 1);
    let Some(Heard::Committed { instances: mut heard, effects }) = read_payload(&payloads[0], "them") else {
        panic!("{payloads:?}")
    };
    heard.sort_unstable();
    let mut sent = instances;
    sent.sort_unstable();
    assert_eq!((heard, effects), (sent, true));
}

#[test]
fn a_host_skips_its_own_notifications() {
    let payloads = Queued { instances: ids(1), ..Queued::default() }.payloads("me");
    assert_eq!(read_payload(&payloads[0], "me"), None);
}

#[test]
fn many_ids_are_split_below_the_payload_limit_and_each_is_sent_once() {
    let mut instances = ids(1000);
    instances.extend(instances.clone());
    let payloads = Queued { instances: instances.clone(), ..Queued::default() }.payloads("me");
    assert!(payloads.len() > 1);
    assert!(payloads.iter().all(|payload| payload.len() < 8000), "PostgreSQL's limit");
    let mut heard: Vec<InstanceId> = payloads
        .iter()
        .flat_map(|payload| match read_payload(payload, "them") {
            Some(Heard::Committed { instances, effects: false }) => instances,
            other => panic!("{other:?}"),
        })
        .collect();
    heard.sort_unstable();
    instances.sort_unstable();
    instances.dedup();
    assert_eq!(heard, instances);
}

#[test]
fn too_many_ids_to_name_announce_everything() {
    let mut queued = Queued { instances: ids(MAX_QUEUED), ..Queued::default() };
    queued.merge(Queued { instances: ids(1), ..Queued::default() });
    assert!(queued.everything && queued.instances.is_empty());
    let payloads = queued.payloads("me");
    assert_eq!(read_payload(&payloads[0], "them"), Some(Heard::Missed));
}

#[test]
fn a_payload_of_another_version_or_sender_wakes_everything() {
    assert_eq!(read_payload("2 them - ", "me"), Some(Heard::Missed));
    assert_eq!(read_payload("hello", "me"), Some(Heard::Missed));
    let heard = read_payload("1 them - not-an-id", "me");
    assert_eq!(heard, Some(Heard::Committed { instances: Vec::new(), effects: false }));
}
