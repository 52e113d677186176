//! The store operations, written once over [`super::sql::Backend`]: each
//! topic's trait (`StreamStore`, `ChunkStore`, `GroupStore`, `ViewStore`, `ConnectorStore`,
//! `AgentStore`, `RoleStore`, `RegistryStore`, `SharedStagingStore`) is implemented for every backend, so the SQLite and the
//! PostgreSQL store run the same statements wherever their dialects agree.

mod agents;
mod chunks;
mod connectors;
mod groups;
mod leases;
mod registry;
mod roles;
mod staging;
mod streams;
mod views;
