-- Modules are known by their content. An instance records the sha256 of the module it
-- runs, so that a version deleted and deployed again with other bytes is never taken
-- for its earlier self, by any host. A version with running instances cannot be
-- deleted, so only finished instances of versions deleted before this migration are
-- left with '' (their module is gone).
ALTER TABLE instances ADD COLUMN module_sha256 TEXT NOT NULL DEFAULT '';
UPDATE instances SET module_sha256 = COALESCE(
    (SELECT sha256 FROM definition_versions deployed
     WHERE deployed.name = instances.definition AND deployed.version = instances.definition_version),
    '');

-- Modules and manifests are read by sha256 when a host does not hold them yet.
CREATE INDEX definition_versions_by_sha256 ON definition_versions (sha256);

-- The sha256 of each compiled artifact (native code) a host wrote to its module cache
-- folder, per module and engine configuration: a file that does not match is never
-- loaded.
CREATE TABLE module_artifacts (
    module_sha256 TEXT NOT NULL,
    engine_key TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    PRIMARY KEY (module_sha256, engine_key)
);
