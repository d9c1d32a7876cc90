//! Running under a control plane: the agent that keeps a gateway on its environment's desired
//! pack version, the HTTP client, the decision-event shipper, and the local copy of the last
//! good pack. The protocol's shapes are in `palisade_wire`.

pub mod agent;
pub mod applier;
pub mod client;
pub mod events;
pub mod persist;

pub use agent::{Agent, AgentConfig, Applied, PackApplier};
pub use applier::GatewayApplier;
pub use client::{ControlClient, ControlError, DesiredAnswer};
