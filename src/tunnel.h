/* tunnel: one accepted local connection paired with one WebSocket to the
 * gateway (PROTOCOL.md section 1). It owns the states of both directions,
 * the queues between them and their watermarks, and ends alone: nothing it
 * does can stop the listener or another tunnel.
 *
 * Ownership: tunnel_start allocates the tunnel and links it into the
 * listener; the tunnel frees itself once its handles are closed and then
 * calls listener_tunnel_gone. */
#ifndef OTOROSHICTL_TUNNEL_H
#define OTOROSHICTL_TUNNEL_H

#include <uv.h>

struct listener;
struct tunnel;

/* Above this many bytes queued towards one side, the other side stops
 * reading; below the low mark it reads again. */
#define TUNNEL_HIGH_WATER (512 * 1024)
#define TUNNEL_LOW_WATER (128 * 1024)
/* Control frames (answers to the gateway's Pings) queued towards a gateway
 * that reads nothing: past this, the tunnel stops reading it. */
#define TUNNEL_CONTROL_HIGH_WATER (64 * 1024)
/* From accept to an accepted upgrade. */
#define TUNNEL_HANDSHAKE_TIMEOUT_MS 10000
/* How long the gateway has to close after our Close, and how long the local
 * client has to close after our FIN. */
#define TUNNEL_DRAIN_TIMEOUT_MS 30000
/* A Close with an error this soon after the 101, before any data, says
 * the route could not carry the tunnel at all. */
#define TUNNEL_EARLY_CLOSE_MS 1000
/* A Close 1011 after this much silence both ways is the route's backend
 * idle timeout. */
#define TUNNEL_IDLE_SILENCE_MS 3000

/* Accepts one connection from server and starts its tunnel. Returns 0, or a
 * negative uv error when nothing could be accepted. */
int tunnel_start(struct listener *l, uv_stream_t *server);
/* Starts the one tunnel of --stdio, over standard input and output (pipes,
 * sockets or a terminal). Returns 0, or a negative uv error (UV_EINVAL when
 * a descriptor is a plain file, which cannot be watched). */
int tunnel_start_stdio(struct listener *l);
/* Ends the tunnel gracefully: what is queued is sent, then Close 1000 at
 * once (no linger), then the gateway's answering Close is awaited. */
void tunnel_shutdown(struct tunnel *t);
/* Closes everything at once. */
void tunnel_abort(struct tunnel *t);
/* The keepalive check, run for every tunnel by the listener's one timer
 * (see liveness.h): a tunnel whose gateway gave no sign of life for
 * `interval` ms sends a Ping; one with none for twice that ends. */
void tunnel_check_alive(struct tunnel *t, uint64_t now, uint64_t interval);

#endif
