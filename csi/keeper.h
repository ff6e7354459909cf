/*
 * keeper.h - the node plugin's side of the descriptor exchange with the
 * granary-mount supervisors of its mount pods.
 *
 * Every staged volume's FUSE connection is held by at least one process
 * outside the mount pod that serves it, so that no single restart ends
 * it: the node plugin keeps a copy of each /dev/fuse descriptor here, and
 * each mount pod's granary-mount keeps one too. The plugin listens on one
 * unix socket per volume, in the volume's directory of its state directory
 * (STATE/node/VOLUME/keeper.sock), the only part of it a mount pod sees; a
 * supervisor connects, says hello (volume, pod, template, whether it holds
 * a descriptor and of which connection; a hello for another volume than
 * the socket's is refused), and then:
 *   - it holds none (a new pod, or its container restarted): the keeper
 *     sends its copy with the daemon's argv ("fd");
 *   - the keeper holds none (the plugin restarted): the keeper asks for
 *     the supervisor's ("send"), and keeps the copy it gets back when it
 *     is /dev/fuse of the connection the hello named (any other, or one
 *     it did not ask for, is closed and logged);
 *   - they hold different connections (the plugin mounted anew while the
 *     supervisor was away): the keeper sends its own with fresh=true and
 *     the supervisor starts a new daemon on it.
 * A connection is named by the staging mount's device number, which the
 * kernel gives each FUSE connection.
 * The connection stays open: the supervisor reports each daemon start and
 * exit ("status"), and the keeper pushes a new connection when it mounts
 * anew. All I/O runs on the keeper's thread; the functions below take the
 * keeper's lock only briefly. A mount pod is not trusted: each socket
 * holds at most 8 connections, one without a hello in 5 s is closed, and
 * what a pod sent (its descriptors, its connections) is closed off the
 * thread (fdchan_close_async), as such a close may block.
 */
#ifndef GRANARY_CSI_KEEPER_H
#define GRANARY_CSI_KEEPER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct keeper;

#define KEEPER_NAME_MAX 254

/* One connected supervisor. */
struct keeper_supervisor {
	char pod[KEEPER_NAME_MAX];
	char template_hash[40];
	long daemon_pid;            /* its running granary-fuse; 0 = none now */
	unsigned restarts;          /* daemons it started after the first */
	uint64_t backoff_ms;        /* wait before its next start; 0 = none */
	char last_exit[160];        /* how its last daemon ended ("" = none did) */
};

/* Supervisors listed per volume: more than two overlap only briefly. */
#define KEEPER_LISTED 4

/* What the keeper knows of one volume. */
struct keeper_status {
	bool known;                 /* keeper_put was called for it */
	bool holds_fd;
	uint64_t conn;              /* the held connection's id; 0 = none */
	size_t nsup;                /* connected supervisors listed, at most KEEPER_LISTED */
	struct keeper_supervisor sup[KEEPER_LISTED];
	uint64_t alone_since_ms;    /* no supervisor connected since; 0 = one is */
};

/* The socket's name in a volume's directory. */
#define KEEPER_SOCKET "keeper.sock"

/* Starts the keeper's thread; it listens on nothing yet. */
enum error_code keeper_new(struct keeper **out, struct error *err);

/* Stops the thread and closes every descriptor (the supervisors keep
 * theirs; the socket files stay for the next plugin). NULL is fine. */
void keeper_free(struct keeper *k);

/* Listens for the volume's supervisors on socket_path (an old socket
 * there is replaced); nothing when it listens for the volume already. A
 * supervisor that comes through it may speak for that volume only. */
enum error_code keeper_listen(struct keeper *k, const char *volume, const char *socket_path,
			      struct error *err);

/*
 * Records the volume's daemon argv (a JSON array of strings, not stolen)
 * and init_state path, and, when fd >= 0, keeps a copy of the connection
 * conn (fresh: a new mount) and sends it to the volume's connected
 * supervisors. fd -1 records the argv only (a restarted plugin that holds
 * no descriptor yet).
 */
enum error_code keeper_put(struct keeper *k, const char *volume, json_t *argv,
			   const char *init_state, int fd, uint64_t conn, struct error *err);

/* A copy of the volume's descriptor of connection conn (one that a
 * supervisor gave back), or -1. */
int keeper_dup_fd(struct keeper *k, const char *volume, uint64_t conn);

/* Forgets the volume, closes its copy, stops listening on its socket and
 * removes the socket file. */
void keeper_forget(struct keeper *k, const char *volume);

/* Takes the pods whose granary-mount said hello for a volume the keeper
 * does not know (left from an unstage the plugin missed): up to max names
 * into out, each reported once. */
size_t keeper_take_unknown(struct keeper *k, char (*out)[KEEPER_NAME_MAX], size_t max);

/* The volume's state; st->known false for a volume never put (its
 * connected supervisors are listed all the same). */
void keeper_status(struct keeper *k, const char *volume, struct keeper_status *st);

#endif
