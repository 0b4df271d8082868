//! Listeners: accept loops per protocol.
