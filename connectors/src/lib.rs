//! The home of connectors (sources and sinks declared in SQL). It holds no
//! code yet and has no dependencies; nothing uses it.
