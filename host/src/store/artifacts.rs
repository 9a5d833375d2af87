//! The sha256 of each compiled artifact a host wrote, so that a file changed on disk is
//! never loaded as native code.

use super::{Result, Store};
use crate::model::ModuleHash;

impl Store {
    /// The recorded sha256 of the artifact of `module` compiled under `engine_key`.
    pub async fn artifact_hash(&self, module: &ModuleHash, engine_key: &str) -> Result<Option<ModuleHash>> {
        let sql = "SELECT artifact_sha256 FROM module_artifacts WHERE module_sha256 = $1 AND engine_key = $2";
        let artifact = self
            .fetch_optional(sql, &[module.0.as_str().into(), engine_key.into()], |row| {
                row.text("artifact_sha256")
            })
            .await?;
        Ok(artifact.map(ModuleHash))
    }

    /// Records the sha256 of the artifact just written for `module` under `engine_key`,
    /// replacing an earlier one.
    pub async fn record_artifact_hash(
        &self,
        module: &ModuleHash,
        engine_key: &str,
        artifact: &ModuleHash,
    ) -> Result<()> {
        let sql = "INSERT INTO module_artifacts (module_sha256, engine_key, artifact_sha256) VALUES ($1, $2, $3)
             ON CONFLICT (module_sha256, engine_key) DO UPDATE SET artifact_sha256 = excluded.artifact_sha256";
        self.execute(sql, &[module.0.as_str().into(), engine_key.into(), artifact.0.as_str().into()]).await?;
        Ok(())
    }
}
