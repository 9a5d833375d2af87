//! The instances this process committed lately, so that an action on a running
//! instance need not read it back from the store first.
//!
//! A copy here is a hint, never the truth: another process may have moved the
//! instance on. The revision check of the commit catches that, and `act` recomputes
//! from the store whenever a change computed from a copy fails or is refused.

use crate::model::{Instance, InstanceId};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
pub(super) struct RecentInstances {
    /// Bytes per generation; at most two generations are kept.
    generation_bytes: usize,
    maps: Mutex<Generations>,
}

/// Two maps instead of an LRU list: entries go into `young`; when it is full, `old`
/// is dropped and `young` takes its place. A hit in `old` moves back to `young`.
#[derive(Debug, Default)]
struct Generations {
    young: Generation,
    old: Generation,
}

#[derive(Debug, Default)]
struct Generation {
    instances: HashMap<InstanceId, Instance>,
    /// What its instances are counted at, together ([`size`]).
    bytes: usize,
}

impl RecentInstances {
    /// Keeps copies counted at `budget` bytes at most.
    pub(super) fn new(budget: usize) -> Self {
        RecentInstances { generation_bytes: budget / 2, maps: Mutex::default() }
    }

    pub(super) fn get(&self, id: InstanceId) -> Option<Instance> {
        let mut maps = self.lock();
        if let Some(instance) = maps.young.instances.get(&id) {
            return Some(instance.clone());
        }
        let instance = maps.old.remove(id)?;
        self.insert_young(&mut maps, instance.clone());
        Some(instance)
    }

    /// Keeps `instance` as committed, unless a later revision is kept already (two
    /// commits of one instance may report back in either order). Finished instances
    /// take no more actions and are not kept.
    pub(super) fn committed(&self, instance: &Instance) {
        let mut maps = self.lock();
        let newer_kept = [&maps.young, &maps.old]
            .iter()
            .filter_map(|generation| generation.instances.get(&instance.id))
            .any(|kept| kept.revision.0 >= instance.revision.0);
        if newer_kept {
            return;
        }
        maps.old.remove(instance.id);
        if instance.status.is_terminal() {
            maps.young.remove(instance.id);
        } else {
            self.insert_young(&mut maps, instance.clone());
        }
    }

    /// Drops the copy of an instance that turned out stale, or whose commit failed.
    pub(super) fn forget(&self, id: InstanceId) {
        let mut maps = self.lock();
        maps.young.remove(id);
        maps.old.remove(id);
    }

    /// What the kept copies are counted at, together.
    pub(super) fn bytes(&self) -> usize {
        let maps = self.lock();
        maps.young.bytes + maps.old.bytes
    }

    /// Keeps `instance` in `young`, replacing its copy there; one larger than a
    /// generation is not kept at all.
    fn insert_young(&self, maps: &mut Generations, instance: Instance) {
        maps.young.remove(instance.id);
        let bytes = size(&instance);
        if bytes > self.generation_bytes {
            return;
        }
        if maps.young.bytes + bytes > self.generation_bytes {
            maps.old = std::mem::take(&mut maps.young);
        }
        maps.young.bytes += bytes;
        maps.young.instances.insert(instance.id, instance);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A poisoned lock means a panic elsewhere mid-update; the maps stay usable.
        self.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Generation {
    fn remove(&mut self, id: InstanceId) -> Option<Instance> {
        let instance = self.instances.remove(&id)?;
        self.bytes -= size(&instance);
        Some(instance)
    }
}

/// What a copy of `instance` is counted at: its text (the data above all, which a
/// definition may make megabytes long) and the fixed part.
fn size(instance: &Instance) -> usize {
    let optional = |text: &Option<String>| text.as_ref().map_or(0, String::len);
    std::mem::size_of::<Instance>()
        + instance.definition.len()
        + instance.module_sha256.0.len()
        + instance.state.len()
        + instance.data.len()
        + optional(&instance.message)
        + optional(&instance.error)
        + optional(&instance.callback_url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Revision, Status};

    #[test]
    fn keeps_the_latest_revision_and_drops_finished_instances() {
        let recent = RecentInstances::new(1 << 20);
        let id = InstanceId::generate();
        recent.committed(&Instance::sample(id, 2, Status::Running));
        recent.committed(&Instance::sample(id, 1, Status::Running));
        assert_eq!(recent.get(id).map(|kept| kept.revision), Some(Revision(2)));
        recent.committed(&Instance::sample(id, 3, Status::Completed));
        assert!(recent.get(id).is_none());
        recent.committed(&Instance::sample(id, 4, Status::Running));
        recent.forget(id);
        assert!(recent.get(id).is_none());
    }

    #[test]
    fn holds_at_most_its_budget() {
        let one = size(&Instance::sample(InstanceId::generate(), 1, Status::Running));
        let recent = RecentInstances::new(4 * one);
        let ids: Vec<InstanceId> = (0..7).map(|_| InstanceId::generate()).collect();
        for id in &ids {
            recent.committed(&Instance::sample(*id, 1, Status::Running));
            assert!(recent.bytes() <= 4 * one, "{} bytes kept", recent.bytes());
        }
        let kept = ids.iter().filter(|id| recent.get(**id).is_some()).count();
        assert!(kept <= 4, "{kept} kept");
        assert!(recent.get(ids[6]).is_some(), "the newest is kept");

        let mut large = Instance::sample(InstanceId::generate(), 1, Status::Running);
        recent.committed(&large);
        large.data = "x".repeat(4 * one);
        large.revision = Revision(2);
        recent.committed(&large);
        assert!(recent.get(large.id).is_none(), "a copy larger than a generation is not kept");
    }
}
