//! Deploying definition modules and describing what is deployed.

use super::{Error, Idempotent, Result, Service};
use crate::model::{Caller, DefinitionVersion, ModuleHash, Role, Status, Timestamp};
use crate::store;
use std::sync::Arc;

/// The result of a deploy: the version, and whether this call created it.
#[derive(Debug)]
pub struct Deployed {
    pub version: DefinitionVersion,
    pub created: bool,
}

#[derive(Debug)]
pub struct DefinitionSummary {
    pub name: String,
    /// The version new instances get: the pinned one, else the highest non-retired.
    pub default_version: Option<u32>,
    pub pinned_version: Option<u32>,
    pub versions: Vec<VersionSummary>,
}

impl DefinitionSummary {
    /// The summary once `version` is pinned (`None`: unpinned). The default rule is the
    /// store's ([`crate::store::Store::start_version`]): the pinned version, else the
    /// highest one not retired.
    pub(super) fn pinned(mut self, version: Option<u32>) -> DefinitionSummary {
        let highest = self
            .versions
            .iter()
            .filter(|summary| summary.version.retired_at.is_none())
            .map(|summary| summary.version.version)
            .max();
        self.pinned_version = version;
        self.default_version = version.or(highest);
        self
    }
}

#[derive(Debug)]
pub struct VersionSummary {
    pub version: DefinitionVersion,
    /// Instances of this version per status.
    pub instances: Vec<(Status, i64)>,
}

impl Service {
    /// Validates and stores a module. The same bytes again are not an error; other
    /// bytes under a deployed name and version are.
    #[tracing::instrument(skip_all, fields(bytes = wasm.len()))]
    pub async fn deploy(
        &self,
        caller: &Caller,
        wasm: Vec<u8>,
        idempotent: Option<&Idempotent<'_, Deployed>>,
    ) -> Result<Deployed> {
        caller.require(Role::Deployer)?;
        let sha256 = ModuleHash::of(&wasm);
        if let Some(version) = self.store.definition_version_with_hash(&sha256).await? {
            let deployed = Deployed { version, created: false };
            self.keep_response(idempotent, &deployed).await?;
            return Ok(deployed);
        }
        let wasm = Arc::<[u8]>::from(wasm);
        let module = self.compile_new(wasm.clone()).await?;
        let version = DefinitionVersion {
            name: module.manifest.name.clone(),
            version: module.manifest.version,
            sha256,
            manifest: module.manifest.clone(),
            deployed_at: Timestamp::now(),
            retired_at: None,
        };
        let deployed = Deployed { version, created: true };
        let record = idempotent.map(|idempotent| idempotent.record(&deployed, deployed.version.deployed_at));
        let Deployed { version, .. } = &deployed;
        match self.store.insert_definition_version(version, &wasm, self.keyed(record.as_ref())).await {
            Ok(()) => {
                tracing::info!(name = %version.name, version = version.version, sha256 = %version.sha256, "deployed");
                self.keep_artifact(&module).await;
                self.modules.insert(module);
                Ok(deployed)
            }
            Err(store::Error::Duplicate) => {
                let existing = self.store.definition_version(&version.name, version.version).await?;
                match existing {
                    Some(existing) if existing.sha256 == version.sha256 => {
                        let deployed = Deployed { version: existing, created: false };
                        self.keep_response(idempotent, &deployed).await?;
                        Ok(deployed)
                    }
                    Some(existing) => Err(Error::VersionConflict {
                        name: existing.name,
                        version: existing.version,
                        sha256: existing.sha256.0,
                    }),
                    None => Err(Error::Internal("a conflicting version vanished".into())),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    pub async fn definitions(&self) -> Result<Vec<DefinitionSummary>> {
        let versions = self.store.definition_versions(None).await?;
        let mut names: Vec<String> = versions.iter().map(|version| version.name.clone()).collect();
        names.dedup();
        let mut summaries = Vec::with_capacity(names.len());
        for name in names {
            let of_name = versions.iter().filter(|version| version.name == name).cloned().collect();
            summaries.push(self.summarize(name, of_name).await?);
        }
        Ok(summaries)
    }

    pub async fn definition(&self, name: &str) -> Result<DefinitionSummary> {
        let versions = self.store.definition_versions(Some(name)).await?;
        if versions.is_empty() {
            return Err(Error::DefinitionNotFound(name.into()));
        }
        self.summarize(name.into(), versions).await
    }

    pub async fn definition_version(&self, name: &str, version: u32) -> Result<DefinitionVersion> {
        self.store
            .definition_version(name, version)
            .await?
            .ok_or_else(|| Error::VersionNotFound { name: name.into(), version })
    }

    /// The version a new instance of `name` gets, or the one it asked for if that may
    /// take new instances, with its module's sha256.
    pub(super) async fn version_for_start(
        &self,
        name: &str,
        requested: Option<u32>,
    ) -> Result<(u32, ModuleHash)> {
        let not_found = || match requested {
            Some(version) => Error::VersionNotFound { name: name.into(), version },
            None => Error::DefinitionNotFound(name.into()),
        };
        let start = self.store.start_version(name, requested).await?.ok_or_else(not_found)?;
        if start.retired {
            return Err(Error::VersionRetired { name: name.into(), version: start.version });
        }
        Ok((start.version, start.sha256))
    }

    async fn summarize(&self, name: String, versions: Vec<DefinitionVersion>) -> Result<DefinitionSummary> {
        let pinned_version = self.store.pinned_version(&name).await?;
        let counts = self.store.instance_counts(&name).await?;
        // The rule for the default version is the store's, which starts use.
        let default_version = self.store.start_version(&name, None).await?.map(|start| start.version);
        let versions = versions
            .into_iter()
            .map(|version| {
                let instances = Status::ALL
                    .into_iter()
                    .map(|status| {
                        let count = counts
                            .iter()
                            .filter(|count| count.version == version.version && count.status == status)
                            .map(|count| count.count)
                            .sum();
                        (status, count)
                    })
                    .collect();
                VersionSummary { version, instances }
            })
            .collect();
        Ok(DefinitionSummary { name, default_version, pinned_version, versions })
    }
}
