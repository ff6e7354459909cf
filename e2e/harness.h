/*
 * harness.h - the pieces the end-to-end tests in e2e/ share: the S3
 * fixture's settings ($GRANARY_S3_DIR/env), the built binaries
 * ($GRANARY_BIN_DIR), daemons as child processes with their output in a
 * log file, FUSE mounts appearing, loopback ports, temporary trees and
 * test data.
 *
 * Meant for Check tests only: the functions that can fail in a way a test
 * cannot go on from fail the running test with ck_assert (naming what
 * failed); the others return a status for the test to check. Nothing here
 * keeps state between calls, so each function is safe from any thread,
 * though fork-based ones are meant for the test's main thread.
 */
#ifndef GRANARY_E2E_HARNESS_H
#define GRANARY_E2E_HARNESS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Reads $GRANARY_S3_DIR/env, written by scripts/s3-server.sh start, into
 * endpoint (GRANARY_S3_ENDPOINT) and credentials (GRANARY_S3_CREDENTIALS,
 * the path of an AWS-style credentials file). Fails the test when the
 * variable is not set or the file cannot be read; a value missing from the
 * file leaves its buffer as it was.
 */
/* The value of key in $dir_var/env, the file a ctest fixture (named for
 * messages) writes, into out; a key missing from the file leaves out as it
 * was. Fails the test when the variable is not set or the file cannot be
 * read. */
void harness_fixture_env(const char *dir_var, const char *fixture, const char *key, char *out,
			 size_t size);

void harness_s3_env(char *endpoint, size_t endpoint_size, char *credentials,
		    size_t credentials_size);

/*
 * Copies $GRANARY_BIN_DIR (where the build puts granary-* binaries) into
 * out. Fails the test when it is not set.
 */
void harness_bin_dir(char *out, size_t size);

/*
 * fork/exec of argv (NULL-terminated; argv[0] a path, or a name looked up
 * in PATH) with stdout and stderr appended to log (created 0644). The
 * child gets SIGKILL when the test process dies, so that a test failing
 * half-way leaves no daemon behind. Returns the child's pid; fails the
 * test when fork fails. An exec failure shows as exit status 127.
 */
pid_t harness_spawn(const char *const *argv, const char *log);

/*
 * SIGTERM to *pid, then waits up to timeout_ms for it to exit; past that,
 * SIGKILL and wait. Returns the exit status (128 + signal number for a
 * signal), or -1 when it had to be killed; *pid is set to 0 either way.
 * *pid <= 0 (nothing running) returns 0 at once. ms, when not NULL, gets
 * the milliseconds the graceful exit took (untouched on -1 or *pid <= 0).
 */
int harness_stop(pid_t *pid, uint64_t timeout_ms, uint64_t *ms);

/* Whether a FUSE file system (type fuse or fuse.*) is mounted at dir. */
int harness_is_mounted(const char *dir);

/*
 * Waits up to timeout_ms for a FUSE mount at dir, polling every
 * poll_ms, while the daemon *pid runs. Returns 0 once mounted; the
 * daemon's exit status (128 + signal number for a signal) when it exited
 * first, then *pid is set to 0; -1 on timeout.
 */
int harness_wait_mount(pid_t *pid, const char *dir, uint64_t timeout_ms, uint64_t poll_ms);

/*
 * A loopback TCP port free at the time of the call (bound, noted and
 * closed again). Fails the test when no socket can be bound.
 */
int harness_free_port(void);

/*
 * Creates a fresh directory from template (mkdtemp: ends in XXXXXX) into
 * buf, which must hold it. Fails the test naming the template on error.
 */
void harness_tmpdir(char *buf, size_t size, const char *template);

/*
 * Removes path and everything below it without following symbolic links
 * (rm -rf). Returns 0, or -1 with errno set when something could not be
 * removed (what could be is gone). A missing path returns -1 (ENOENT).
 */
int harness_rm_rf(const char *path);

/* Writes text to path (created with mode, truncated); fails the test on
 * any error. */
void harness_write_file(const char *path, const char *text, mode_t mode);

/*
 * Writes granary-meta's three role keys, each different and mode 0600, as
 * DIR/csi.key, DIR/worker.key and DIR/mount.key (meta/meta_auth.h), and
 * fills args (HARNESS_META_AUTH_ARGS entries, paths in paths) with meta's
 * flags "--auth.csi_key_file" PATH ... for them. paths must outlive args.
 */
#define HARNESS_META_AUTH_ARGS 6
struct harness_meta_keys {
	char csi[300], worker[300], mount[300];
	const char *args[HARNESS_META_AUTH_ARGS];
};
void harness_meta_keys(const char *dir, struct harness_meta_keys *k);

/*
 * An allowed_file_roots fixture: makes the directory roots, roots/ds with
 * one file, file (10 bytes, "0123456789"), and roots/etc, a symbolic link
 * to /etc (a way out of the root). Fails the test on any error.
 */
void harness_file_roots(const char *roots, const char *file);

/* Whether the file at path holds needle on one of its lines (0 when the
 * file cannot be read). */
int harness_file_contains(const char *path, const char *needle);

/* How many lines of the file at path hold needle (0 when the file cannot
 * be read): a log line written once, or once per event. */
int harness_file_count(const char *path, const char *needle);

/* Prints the last 40 lines of the log at path to stderr under a header
 * naming it, or says that there is none. */
void harness_dump_log(const char *path);

/*
 * Fills buf with n pseudo-random bytes from a xorshift64 generator whose
 * state starts at x: the same x gives the same bytes.
 */
void harness_fill(unsigned char *buf, size_t n, uint64_t x);

/*
 * A TCP proxy the test controls, run by a thread of the test process: it
 * listens on a free loopback port and forwards every connection to
 * target_port on 127.0.0.1, both ways, until stalled. Stalled, it still
 * accepts connections but reads and writes nothing on any of them, old or
 * new: a server that hangs, without stopping a process other tests share.
 * Fails the test when it cannot listen or start its thread.
 */
struct harness_proxy;
struct harness_proxy *harness_proxy_start(int target_port);
int harness_proxy_port(const struct harness_proxy *p);
void harness_proxy_stall(struct harness_proxy *p, int stalled);
/* Connections accepted so far (forwarded or held). */
unsigned harness_proxy_accepted(struct harness_proxy *p);
/* Closes every connection and the listener, joins the thread, frees p. */
void harness_proxy_stop(struct harness_proxy *p);

/*
 * An "attacker endpoint": a listener on a free loopback port, run by a
 * thread of the test process, that stands for an address a registration
 * names. It reads each request's head, counts requests and those that
 * carried an Authorization header (the daemon signed them with its
 * credentials), and answers every request (Connection: close) with an S3
 * listing chosen by the prefix listed, listings no real server gives:
 *   pages   truncated, a new continuation token every time: never ends;
 *   loop    truncated, NextContinuationToken "again" whatever was asked;
 *   huge    one object "huge/a" of 2^64 - 1 bytes;
 *   clash   "clash/a" and "clash/a/b": a file and a directory of one name;
 *   else    an empty, complete listing.
 * Fails the test when it cannot listen.
 */
struct harness_recorder;
struct harness_recorder *harness_recorder_start(void);
/* "http://127.0.0.1:PORT", valid until harness_recorder_stop. */
const char *harness_recorder_url(const struct harness_recorder *r);
unsigned harness_recorder_requests(struct harness_recorder *r);
unsigned harness_recorder_signed(struct harness_recorder *r);
void harness_recorder_stop(struct harness_recorder *r);

/* The port of an "http://host:port" URL, or -1. */
int harness_url_port(const char *url);

/*
 * A reader thread for takeover tests (pthread_create(..., harness_direct_reader, r)):
 * until *stop, O_DIRECT reads of random 4 KiB-aligned ranges (4 KiB to 1 MiB)
 * of path, each compared with expect[0..size). Counts reads, reads that
 * failed or were wrong (errors; an open that fails counts one and ends the
 * thread), ENOTCONN on its own, and the longest read in ms.
 */
struct harness_reader {
	atomic_int *stop;
	const char *path;
	const unsigned char *expect;
	size_t size;
	unsigned seed;
	long reads, errors, enotconn;
	uint64_t longest_ms;
};
void *harness_direct_reader(void *arg);

/* A response body that grows as libcurl writes it (CURLOPT_WRITEFUNCTION
 * harness_body_write, CURLOPT_WRITEDATA a struct harness_body); buf is
 * NUL-terminated, the caller frees it. */
struct harness_body {
	char *buf;
	size_t len;
};
size_t harness_body_write(char *p, size_t size, size_t n, void *arg);

/*
 * GET path from a daemon's HTTP endpoint at address ("unix:///path",
 * "127.0.0.1:PORT", as the daemons' settings write it). Returns the
 * status (0: no answer); *body (may be NULL) receives the whole body,
 * NUL-terminated, for the caller to free.
 */
long harness_http_get(const char *address, const char *path, char **body);
/* The same with one more request header ("Name: value"; NULL: none). */
long harness_http_request(const char *address, const char *path, const char *header,
			  char **body);

/*
 * Test certificates, made with the openssl command under a directory (P-256
 * keys, unencrypted, valid two days): a CA, a second CA that signed
 * nothing else, granary-meta's certificate for HARNESS_TLS_META_NAME, one
 * certificate every worker serves with for HARNESS_TLS_WORKER_NAME (the
 * chart's scheme: clients dial a worker's IP and check that one name), and
 * a client certificate for mutual TLS. Paths only; fails the test when
 * openssl fails.
 */
#define HARNESS_TLS_META_NAME "granary-meta.test"
#define HARNESS_TLS_WORKER_NAME "granary-worker.test"
struct harness_certs {
	char ca[300], other_ca[300];
	char meta_cert[300], meta_key[300];
	char worker_cert[300], worker_key[300];
	char client_cert[300], client_key[300];
};
void harness_certs_make(const char *dir, struct harness_certs *c);

/*
 * harness_http_request over HTTPS when ca_file is not NULL: the server's
 * certificate must chain to ca_file and carry name (NULL: the address),
 * the connection going to address. *cc (may be NULL) gets curl's result:
 * a refused handshake is status 0 with *cc saying why.
 */
long harness_https_request(const char *address, const char *path, const char *header,
			   const char *ca_file, const char *name, char **body, int *cc);

/*
 * The value of one sample in a Prometheus text body: sample is the name
 * with its labels exactly as rendered ("granary_fuse_reads_total",
 * "granary_fuse_source_reads_total{source=\"local\"}"). -1 when absent.
 */
double harness_metric(const char *text, const char *sample);

/* Aborts the FUSE connection of the mount with device dev (fusectl), so
 * that a failing test does not leave readers blocked in the kernel. */
void harness_fuse_abort(dev_t dev);

#endif
