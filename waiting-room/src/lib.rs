//! Flash-sale waiting room: the logic one Durable Object per room runs, kept pure so that a
//! native simulation exercises exactly what runs at the edge.
#![warn(missing_docs)]
