/*
 * fdchan.h - messages between the node plugin and its mount pods'
 * granary-mount over a unix SOCK_SEQPACKET socket: one JSON object per
 * packet, optionally carrying one file descriptor (SCM_RIGHTS). A packet
 * is a message, so a descriptor always arrives with the message it
 * belongs to. The exchange itself is described in csi/keeper.h.
 */
#ifndef GRANARY_CSI_FDCHAN_H
#define GRANARY_CSI_FDCHAN_H

#include <jansson.h>

#include "common/error.h"

/* The largest message: an argv and a few fields. */
#define FDCHAN_MAX 65536

/* A listening socket at path (an old socket file there is replaced),
 * mode 0600, close-on-exec, non-blocking accepts. -1 and err set. Here and
 * in fdchan_connect a path longer than a socket address holds is reached
 * through its directory (/proc/self/fd). */
int fdchan_listen(const char *path, struct error *err);

/* How long a connect, and each send on the socket it made, waits for room
 * at the peer (SO_SNDTIMEO): a peer that stops accepting or reading costs
 * the sender this much at a time, never more. */
#define FDCHAN_SEND_TIMEOUT_MS 1000

/* A connected socket to path, close-on-exec, its sends bounded by
 * FDCHAN_SEND_TIMEOUT_MS; -1 and err set: ERR_UNAVAILABLE while nobody
 * listens there, ERR_TIMEOUT when the listener's queue stays full that
 * long (nobody accepts). */
int fdchan_connect(const char *path, struct error *err);

/* Sends msg, with fd attached when fd >= 0 (the caller keeps its copy); no
 * SIGPIPE. While the peer's queue is full (it stopped reading) it waits
 * as the socket allows: FDCHAN_SEND_TIMEOUT_MS on one from fdchan_connect,
 * not at all on a non-blocking one, then ERR_TIMEOUT. ERR_UNAVAILABLE when
 * the peer is gone. */
enum error_code fdchan_send(int sock, json_t *msg, int fd, struct error *err);

/* Receives one message into *msg (the caller json_decref's it) and the
 * descriptor it carries into *fd (-1 when none; close-on-exec). Waits at
 * most timeout_ms (-1: no limit). ERR_UNAVAILABLE when the peer closed,
 * ERR_TIMEOUT, ERR_INVALID for a message that is not a JSON object (a
 * descriptor that came with it is closed). Descriptors past the first,
 * and those of an invalid message, go to fdchan_close_async. */
enum error_code fdchan_recv(int sock, json_t **msg, int *fd, int timeout_ms, struct error *err);

/* Closes fd on a detached thread of its own: closing a descriptor the
 * peer sent (a TCP socket with SO_LINGER and unsent data), or a socket
 * with such descriptors still queued on it, can block for as long as the
 * peer likes. Only when no thread can start is it closed at once. -1 is
 * fine. */
void fdchan_close_async(int fd);

/* Writes FUSE_NOTIFY_RESEND on a /dev/fuse descriptor: the kernel queues
 * again every request a daemon read and did not answer (Linux 6.9+). Any
 * holder of the connection may send it. 0, or -1 with errno. */
int fdchan_fuse_resend(int fuse_fd);

#endif
