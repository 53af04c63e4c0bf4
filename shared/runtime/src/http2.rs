//! HTTP/2 flow-control windows of every server and client of the suite.
//!
//! h2 (0.4.16 and later) guards against floods of small DATA frames: each
//! frame under 256 bytes that waits unread charges the difference to a
//! budget of half the connection window, and an exhausted budget closes
//! the whole connection (`GOAWAY ENHANCE_YOUR_CALM`, "too_many_data_frames").
//! gRPC sends each streamed message in a frame of its own, and ours are
//! small (a reservation of one unit is about 25 bytes), so with hyper's
//! windows (1 MiB per stream and per connection on a server) a caller
//! streaming faster than it is answered was cut off after a few thousand
//! messages, with every other call on its connection, instead of being
//! slowed by flow control. A stream window of 64 KiB stops such a sender
//! while its unread frames charge at most about 600 KiB (25-byte
//! messages), and a connection window of 16 MiB makes the budget 8 MiB:
//! a dozen such streams at once on one connection, and many more of
//! larger messages. Bulk transfer stays fast: 64 KiB per round trip and
//! stream is tens of MB/s inside a cluster.
pub const STREAM_WINDOW: u32 = 64 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
