//! Running under a control plane: the agent that keeps a gateway on its environment's desired
//! pack version, the wire types of that protocol, the HTTP client, and the local copy of the
//! last good pack.

pub mod agent;
pub mod applier;
pub mod client;
pub mod events;
pub mod persist;
pub mod wire;

pub use agent::{Agent, AgentConfig, Applied, PackApplier};
pub use applier::GatewayApplier;
pub use client::{ControlClient, ControlError, DesiredAnswer};
