/*
 * test_keeper.c - the mount pods' descriptor exchange, with real
 * processes and a real FUSE mount but no Kubernetes: the test plays the
 * node plugin (it mounts, then hands the connection to its keeper and
 * closes its own descriptor) and the kubelet (it starts granary-mount as
 * a plain process, as a mount pod's container would run it).
 *
 * While O_DIRECT readers compare every byte: granary-fuse SIGKILLed
 * (granary-mount starts a successor), granary-mount and its daemon
 * SIGKILLed together (a container killed whole; the keeper still holds
 * the connection and a new granary-mount takes it over), and the keeper
 * stopped and started again (a node plugin restart: it gets the
 * connection back from granary-mount), after which a new granary-mount
 * is served by the new keeper. No read may fail or see ENOTCONN; the
 * longest read is printed.
 *
 * Then granary-mount's own loop with stand-in daemons (shell commands):
 * a new connection while the old daemon is not reaped yet (no spinning,
 * the successor as soon as it is reaped), and a fake keeper that stops
 * reading or accepting (granary-mount carries on). And csi/reattach.h in
 * mount namespaces of the test's own, with tmpfs mounts standing for the
 * ended and new FUSE mounts: a container that chrooted, and one whose
 * mount point was swapped for a symbolic link.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/fusemount.h"
#include "common/retry.h"
#include "csi/fdchan.h"
#include "csi/keeper.h"
#include "csi/reattach.h"
#include "e2e/harness.h"
#include "unit/check_main.h"

#define FILE_SIZE (8u << 20)
#define NREADERS 3
#define VOLUME "pvc-keeper"

static char bin_dir[512], work[256], src[300], mnt[300], init_state[320], vdir[512], sock[600];
static unsigned char expect[FILE_SIZE];
static char mnt_file[400]; /* mnt/data.bin */
static dev_t mnt_dev;

/* granary-mount on sock, logging to work/mount-N.log; extra (NULL: none)
 * are more of its flags. */
static pid_t start_mount_with(int n, const char *const *extra)
{
	char exe[600], logp[320], sockarg[700];
	const char *argv[16] = { exe, sockarg, "--volume=" VOLUME,
				 "--pod=pod-test", "--template=t1" };
	size_t k = 5;

	for (; extra && *extra && k < 15; extra++)
		argv[k++] = *extra;
	snprintf(exe, sizeof(exe), "%s/granary-mount", bin_dir);
	snprintf(sockarg, sizeof(sockarg), "--socket=%s", sock);
	snprintf(logp, sizeof(logp), "%s/mount-%d.log", work, n);
	return harness_spawn(argv, logp);
}

static pid_t start_mount(int n)
{
	return start_mount_with(n, NULL);
}

/* The daemon granary-mount runs: its only child. 0 when none. */
static pid_t daemon_of(pid_t sup)
{
	char path[64], buf[256];
	pid_t child = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)sup, (int)sup);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f))
		child = (pid_t)atoi(buf);
	fclose(f);
	return child;
}

/* Waits until the keeper sees a supervisor whose daemon is not old_daemon. */
static pid_t wait_daemon(struct keeper *k, long old_daemon, unsigned *restarts)
{
	struct keeper_status st;

	for (int i = 0; i < 400; i++) {
		keeper_status(k, VOLUME, &st);
		if (st.nsup == 1 && st.sup[0].daemon_pid > 0 && st.sup[0].daemon_pid != old_daemon) {
			if (restarts)
				*restarts = st.sup[0].restarts;
			return (pid_t)st.sup[0].daemon_pid;
		}
		usleep(25 * 1000);
	}
	return 0;
}

static json_t *daemon_argv(void)
{
	char exe[600], source[320], cache[320];

	snprintf(exe, sizeof(exe), "%s/granary-fuse", bin_dir);
	snprintf(source, sizeof(source), "file://%s", src);
	snprintf(cache, sizeof(cache), "%s/cache", work);
	return json_pack("[s,s,s,s,s,s,s,s,s]", exe, "--source", source, "--cache.dir", cache,
			 "--cache.block_size", "1MiB", "--init_state", init_state);
}

static void kill_and_reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

START_TEST(test_the_connection_outlives_every_single_restart)
{
	char opts[200], path[400];
	pthread_t t[NREADERS];
	struct harness_reader r[NREADERS];
	struct keeper *k = NULL;
	struct keeper_status st;
	struct error err;
	atomic_int stop = 0;
	pid_t sup, sup2, d1, d2, d3;
	unsigned restarts = 0;
	uint64_t longest = 0;
	json_t *argv;
	long total = 0;
	int fd, copy;
	FILE *f;

	harness_bin_dir(bin_dir, sizeof(bin_dir));
	harness_tmpdir(work, sizeof(work), "/tmp/granary-keeper-XXXXXX");
	snprintf(src, sizeof(src), "%s/src", work);
	snprintf(mnt, sizeof(mnt), "%s/mnt", work);
	snprintf(mnt_file, sizeof(mnt_file), "%s/data.bin", mnt);
	snprintf(init_state, sizeof(init_state), "%s/init", work);
	/* A volume's directory named by the longest volume id: its socket's
	 * path is longer than a socket address holds. */
	snprintf(vdir, sizeof(vdir), "%s/%0128d", work, 7);
	snprintf(sock, sizeof(sock), "%s/" KEEPER_SOCKET, vdir);
	ck_assert_int_gt(strlen(sock), 108);
	ck_assert_int_eq(mkdir(vdir, 0700), 0);
	ck_assert_int_eq(mkdir(src, 0755), 0);
	ck_assert_int_eq(mkdir(mnt, 0755), 0);
	harness_fill(expect, sizeof(expect), 0x2545f4914f6cdd1dull);
	snprintf(path, sizeof(path), "%s/data.bin", src);
	f = fopen(path, "w");
	ck_assert_uint_eq(fwrite(expect, 1, sizeof(expect), f), sizeof(expect));
	fclose(f);

	/* The node plugin: mount, give the keeper a copy, keep none. */
	fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open /dev/fuse: %s", strerror(errno));
	snprintf(opts, sizeof(opts),
		 "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,max_read=1048576",
		 fd);
	ck_assert_msg(mount("granary:keeper", mnt, "fuse.granary", MS_RDONLY | MS_NOSUID | MS_NODEV,
			    opts) == 0, "mount: %s", strerror(errno));
	ck_assert_int_eq(keeper_new(&k, &err), ERR_OK);
	ck_assert_msg(keeper_listen(k, VOLUME, sock, &err) == ERR_OK, "%s", err.msg);
	argv = daemon_argv();
	ck_assert_int_eq(keeper_put(k, VOLUME, argv, init_state, fd, 42, &err), ERR_OK);
	close(fd);

	/* A mount pod's first start. */
	sup = start_mount(1);
	d1 = wait_daemon(k, 0, NULL);
	ck_assert_msg(d1 > 0, "granary-mount never reported a daemon");
	for (int i = 0; i < 200 && access(init_state, F_OK) != 0; i++)
		usleep(25 * 1000);
	ck_assert_int_eq(access(init_state, F_OK), 0);
	/* The node plugin's first open and close of the connection. */
	ck_assert(fusemount_prime(mnt));
	{
		struct stat sb;

		ck_assert_int_eq(stat(mnt, &sb), 0);
		mnt_dev = sb.st_dev;
	}
	for (int i = 0; i < NREADERS; i++) {
		r[i] = (struct harness_reader){ .stop = &stop, .path = mnt_file, .expect = expect,
					       .size = FILE_SIZE, .seed = (unsigned)i + 11 };
		pthread_create(&t[i], NULL, harness_direct_reader, &r[i]);
	}
	usleep(300 * 1000);

	/* 1. The daemon killed: its supervisor starts a successor at once. */
	ck_assert_int_eq(daemon_of(sup), d1);
	kill(d1, SIGKILL);
	d2 = wait_daemon(k, d1, &restarts);
	ck_assert_msg(d2 > 0 && d2 != d1, "no successor after the daemon was killed");
	ck_assert_uint_eq(restarts, 1);
	usleep(300 * 1000);

	/* 2. The whole container killed: the keeper's copy keeps the
	 * connection; the next granary-mount gets it and takes over. */
	kill(d2, SIGKILL);
	kill_and_reap(sup);
	for (int i = 0; i < 100; i++) {
		keeper_status(k, VOLUME, &st);
		if (st.nsup == 0)
			break;
		usleep(20 * 1000);
	}
	ck_assert_uint_eq(st.nsup, 0);
	ck_assert(st.holds_fd);
	usleep(200 * 1000); /* readers wait on the kernel's queue meanwhile */
	sup = start_mount(2);
	d3 = wait_daemon(k, d2, NULL);
	ck_assert_msg(d3 > 0, "the new granary-mount did not take the connection over");
	usleep(300 * 1000);

	/* 3. The node plugin restarts: a new keeper holds nothing until
	 * granary-mount gives the connection back. */
	keeper_free(k);
	k = NULL;
	ck_assert_int_eq(keeper_new(&k, &err), ERR_OK);
	ck_assert_int_eq(keeper_listen(k, VOLUME, sock, &err), ERR_OK);
	ck_assert_int_eq(keeper_put(k, VOLUME, argv, init_state, -1, 0, &err), ERR_OK);
	copy = -1;
	for (int i = 0; i < 200 && copy < 0; i++) {
		copy = keeper_dup_fd(k, VOLUME, 42);
		if (copy < 0)
			usleep(25 * 1000);
	}
	ck_assert_msg(copy >= 0, "granary-mount did not give the connection back");
	close(copy);
	ck_assert_int_eq(keeper_dup_fd(k, VOLUME, 7), -1); /* another connection's id */

	/* ...and can then serve a new granary-mount alone. */
	kill(d3, SIGKILL);
	kill_and_reap(sup);
	sup2 = start_mount(3);
	ck_assert_msg(wait_daemon(k, d3, NULL) > 0, "the new keeper did not hand the connection on");
	usleep(400 * 1000);

	atomic_store(&stop, 1);
	for (int i = 0; i < NREADERS; i++) {
		struct timespec until = retry_deadline_ts(CLOCK_REALTIME, 20000);

		if (pthread_timedjoin_np(t[i], NULL, &until) != 0) {
			harness_fuse_abort(mnt_dev);
			ck_abort_msg("reader %d still blocked 20 s after the last restart", i);
		}
		total += r[i].reads;
		if (r[i].longest_ms > longest)
			longest = r[i].longest_ms;
		ck_assert_msg(r[i].enotconn == 0, "reader %d saw ENOTCONN %ld times", i, r[i].enotconn);
		ck_assert_msg(r[i].errors == 0, "reader %d: %ld failed or wrong reads", i, r[i].errors);
	}
	printf("keeper: %ld reads, longest %llu ms across 3 restarts\n", total,
	       (unsigned long long)longest);
	ck_assert_int_gt(total, 20);

	/* A deleted mount pod: SIGTERM stops the daemon and granary-mount. */
	ck_assert_int_eq(harness_stop(&sup2, 30000, NULL), 0);
	keeper_free(k);
	json_decref(argv);
	ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/* Sends msg (stolen) on s, with fd attached when >= 0. */
static void send_msg(int s, json_t *msg, int fd)
{
	struct error err;

	ck_assert_msg(fdchan_send(s, msg, fd, &err) == ERR_OK, "%s", err.msg);
	json_decref(msg);
}

/* A forged mount pod's hello for volume, holding conn. */
static json_t *hello_msg(const char *volume, json_int_t conn)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:I}", "op", "hello", "volume", volume, "pod",
			 "pod-forged", "template", "t1", "conn", conn);
}

/* A connection to path that said hello for volume, holding conn. */
static int say_hello(const char *path, const char *volume, json_int_t conn)
{
	struct error err;
	int s = fdchan_connect(path, &err);

	ck_assert_msg(s >= 0, "%s", err.msg);
	send_msg(s, hello_msg(volume, conn), -1);
	return s;
}

/* What comes back on s within timeout_ms (NULL when the keeper closed the
 * connection), and the descriptor with it into *fd. */
static json_t *answer(int s, int timeout_ms, int *fd)
{
	struct error err;
	json_t *reply = NULL;

	if (fdchan_recv(s, &reply, fd, timeout_ms, &err) != ERR_OK)
		ck_assert_msg(err.code == ERR_UNAVAILABLE, "no answer and no close: %s", err.msg);
	return reply;
}

/* One hello on sock for volume: what comes back (NULL when the keeper
 * closed the connection), and the descriptor with it into *fd. */
static json_t *hello(const char *path, const char *volume, int *fd)
{
	int s = say_hello(path, volume, 0);
	json_t *reply = answer(s, 5000, fd);

	close(s);
	return reply;
}

/*
 * Each volume's socket is in its own directory, the only one its mount pod
 * sees: a granary-mount there may ask only for that volume's connection.
 * A hello for another volume, staged on the node and held by the keeper,
 * is refused (the connection closed, no descriptor). A forgotten volume's
 * socket is gone.
 */
START_TEST(test_a_volume_socket_hands_out_that_volume_only)
{
	char dir_a[300], dir_b[300], sock_a[320], sock_b[320];
	struct keeper *k = NULL;
	struct error err;
	json_t *argv = json_pack("[s]", "granary-fuse"), *reply;
	int pipe_a[2], pipe_b[2], fd;

	harness_tmpdir(work, sizeof(work), "/tmp/granary-keeper-XXXXXX");
	snprintf(dir_a, sizeof(dir_a), "%s/pvc-a", work);
	snprintf(dir_b, sizeof(dir_b), "%s/pvc-b", work);
	snprintf(sock_a, sizeof(sock_a), "%s/" KEEPER_SOCKET, dir_a);
	snprintf(sock_b, sizeof(sock_b), "%s/" KEEPER_SOCKET, dir_b);
	ck_assert_int_eq(mkdir(dir_a, 0700), 0);
	ck_assert_int_eq(mkdir(dir_b, 0700), 0);
	/* Any descriptor does for the exchange; pipes stand for /dev/fuse. */
	ck_assert_int_eq(pipe(pipe_a), 0);
	ck_assert_int_eq(pipe(pipe_b), 0);
	ck_assert_int_eq(keeper_new(&k, &err), ERR_OK);
	ck_assert_int_eq(keeper_listen(k, "pvc-a", sock_a, &err), ERR_OK);
	ck_assert_int_eq(keeper_listen(k, "pvc-b", sock_b, &err), ERR_OK);
	ck_assert_int_eq(keeper_put(k, "pvc-a", argv, "/a/init", pipe_a[0], 1, &err), ERR_OK);
	ck_assert_int_eq(keeper_put(k, "pvc-b", argv, "/b/init", pipe_b[0], 2, &err), ERR_OK);

	reply = hello(sock_a, "pvc-b", &fd);
	ck_assert_msg(!reply && fd < 0, "volume a's socket answered for volume b: %s",
		      reply ? json_dumps(reply, 0) : "(a descriptor)");
	/* Its own volume's connection it gets. */
	reply = hello(sock_a, "pvc-a", &fd);
	ck_assert_msg(reply && fd >= 0, "no connection for the socket's own volume");
	ck_assert_str_eq(json_string_value(json_object_get(reply, "op")), "fd");
	ck_assert_int_eq(json_integer_value(json_object_get(reply, "conn")), 1);
	close(fd);
	json_decref(reply);

	keeper_forget(k, "pvc-b");
	ck_assert_int_eq(access(sock_b, F_OK), -1);
	ck_assert_int_eq(fdchan_connect(sock_b, &err), -1);
	keeper_free(k);
	json_decref(argv);
	for (int i = 0; i < 2; i++) {
		close(pipe_a[i]);
		close(pipe_b[i]);
	}
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/* Two volumes' sockets in work, pvc-a and pvc-b, listened on by a new keeper. */
static struct keeper *two_volumes(char *sock_a, char *sock_b, size_t size)
{
	struct keeper *k = NULL;
	struct error err;
	char dir[300];

	harness_tmpdir(work, sizeof(work), "/tmp/granary-keeper-XXXXXX");
	ck_assert_int_eq(keeper_new(&k, &err), ERR_OK);
	snprintf(dir, sizeof(dir), "%s/pvc-a", work);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	snprintf(sock_a, size, "%s/" KEEPER_SOCKET, dir);
	ck_assert_int_eq(keeper_listen(k, "pvc-a", sock_a, &err), ERR_OK);
	snprintf(dir, sizeof(dir), "%s/pvc-b", work);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	snprintf(sock_b, size, "%s/" KEEPER_SOCKET, dir);
	ck_assert_int_eq(keeper_listen(k, "pvc-b", sock_b, &err), ERR_OK);
	return k;
}

/* keeper_dup_fd of pvc-a's connection conn within wait_ms, or -1. */
static int dup_within(struct keeper *k, uint64_t conn, int wait_ms)
{
	int fd = keeper_dup_fd(k, "pvc-a", conn);

	for (int i = 0; i < wait_ms / 20 && fd < 0; i++) {
		usleep(20 * 1000);
		fd = keeper_dup_fd(k, "pvc-a", conn);
	}
	return fd;
}

/*
 * A restarted plugin takes back only /dev/fuse, only after it asked for it
 * ("send") on that connection, and only of the connection the hello named:
 * it writes FUSE_NOTIFY_RESEND to what it took (a full pipe would block it)
 * and hands it to the next mount pod.
 */
START_TEST(test_only_an_asked_for_dev_fuse_is_taken_back)
{
	char sock_a[320], sock_b[320];
	struct keeper *k = two_volumes(sock_a, sock_b, sizeof(sock_a));
	json_t *argv = json_pack("[s]", "granary-fuse"), *reply;
	struct error err;
	struct stat sb;
	int p[2], fuse, s, fd;

	ck_assert_int_eq(keeper_put(k, "pvc-a", argv, "", -1, 0, &err), ERR_OK);
	ck_assert_int_eq(pipe(p), 0);
	fuse = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	ck_assert_msg(fuse >= 0, "open /dev/fuse: %s", strerror(errno));

	/* Unasked: a hello that holds nothing, then /dev/fuse all the same. */
	s = say_hello(sock_a, "pvc-a", 0);
	send_msg(s, json_pack("{s:s, s:I}", "op", "fd", "conn", (json_int_t)99), fuse);
	ck_assert_int_eq(dup_within(k, 99, 500), -1);
	close(s);

	/* Asked, but a pipe. */
	s = say_hello(sock_a, "pvc-a", 99);
	reply = answer(s, 2000, &fd);
	ck_assert_msg(reply && fd < 0, "no \"send\" for a hello that holds a connection");
	ck_assert_str_eq(json_string_value(json_object_get(reply, "op")), "send");
	json_decref(reply);
	send_msg(s, json_pack("{s:s, s:I}", "op", "fd", "conn", (json_int_t)99), p[1]);
	fd = dup_within(k, 99, 500);
	ck_assert_msg(fd < 0, "the keeper took back a pipe as the FUSE connection");
	close(s);

	/* Asked, /dev/fuse, but of another connection than the hello's. */
	s = say_hello(sock_a, "pvc-a", 99);
	json_decref(answer(s, 2000, &fd));
	send_msg(s, json_pack("{s:s, s:I}", "op", "fd", "conn", (json_int_t)98), fuse);
	ck_assert_int_eq(dup_within(k, 98, 500), -1);
	close(s);

	/* Asked and /dev/fuse: taken. */
	s = say_hello(sock_a, "pvc-a", 99);
	json_decref(answer(s, 2000, &fd));
	send_msg(s, json_pack("{s:s, s:I}", "op", "fd", "conn", (json_int_t)99), fuse);
	fd = dup_within(k, 99, 2000);
	ck_assert_msg(fd >= 0, "the keeper did not take back /dev/fuse it asked for");
	ck_assert_int_eq(fstat(fd, &sb), 0);
	ck_assert(S_ISCHR(sb.st_mode) && sb.st_rdev == makedev(10, 229));
	close(fd);
	close(s);

	keeper_free(k);
	json_decref(argv);
	close(fuse);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/* A TCP socket whose close() blocks for an hour: SO_LINGER, unsent data,
 * a peer (*peer, *listener) that never reads. The caller closes them
 * first: the last close of the socket then returns at once. */
static int lingering_socket(int *peer, int *listener)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct linger lg = { .l_onoff = 1, .l_linger = 3600 };
	static const char junk[65536];
	socklen_t len = sizeof(sa);
	int small = 4096, c;

	*listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(*listener, 0);
	ck_assert_int_eq(setsockopt(*listener, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	ck_assert_int_eq(bind(*listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(*listener, 1), 0);
	ck_assert_int_eq(getsockname(*listener, (struct sockaddr *)&sa, &len), 0);
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_int_ge(c, 0);
	if (connect(c, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		ck_assert_int_eq(errno, EINPROGRESS);
	*peer = accept(*listener, NULL, NULL);
	ck_assert_int_ge(*peer, 0);
	usleep(50 * 1000);
	while (send(c, junk, sizeof(junk), MSG_NOSIGNAL) > 0)
		;
	ck_assert_int_eq(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	return c;
}

struct status_call {
	struct keeper *k;
	atomic_int done;
};

static void *call_status(void *arg)
{
	struct status_call *a = arg;
	struct keeper_status st;

	keeper_status(a->k, "pvc-b", &st);
	atomic_store(&a->done, 1);
	return NULL;
}

/* What send_msg and say_hello do, in a forked pod: without Check's
 * assertions, which a forked process would report as the test's. A send
 * may fail there: the keeper may have closed the connection already (the
 * refused hello below). */
static void pod_send(int s, json_t *msg, int fd)
{
	struct error err;

	(void)fdchan_send(s, msg, fd, &err);
	json_decref(msg);
}

static int pod_hello(const char *path, const char *volume, json_int_t conn)
{
	struct error err;
	int s = fdchan_connect(path, &err);

	if (s < 0)
		_exit(1);
	pod_send(s, hello_msg(volume, conn), -1);
	return s;
}

/* A mount pod's attacker (a process of its own: a close of its that turns
 * out the last one may block it): on pvc-a's socket, it gives ling[0]
 * back while the keeper holds a connection, sends ling[1] with a status,
 * ling[2] and ling[3] with one message, and queues ling[4] behind a hello
 * for pvc-b that the keeper refuses, closing that connection. It closes
 * its copies right after, as the keeper reads them. */
static pid_t hostile_pod(const char *sock_a, int gate, const int ling[5], const int peer[5],
			 const int listener[5])
{
	pid_t pid = fork();
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} ctl = { 0 };
	char text[] = "{\"op\":\"status\"}", go;
	struct iovec iov = { .iov_base = text, .iov_len = strlen(text) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	int s, r;

	ck_assert_int_ge(pid, 0);
	if (pid > 0)
		return pid;
	/* The peers are the test's to close: a copy kept here would hold off
	 * the reset that lets a last, lingering close of ours return. */
	for (int i = 0; i < 5; i++) {
		close(peer[i]);
		close(listener[i]);
	}
	if (read(gate, &go, 1) != 1)
		_exit(1);
	s = pod_hello(sock_a, "pvc-a", 7);
	usleep(200 * 1000);
	pod_send(s, json_pack("{s:s, s:I}", "op", "fd", "conn", (json_int_t)7), ling[0]);
	pod_send(s, json_pack("{s:s}", "op", "status"), ling[1]);
	ctl.h.cmsg_level = SOL_SOCKET;
	ctl.h.cmsg_type = SCM_RIGHTS;
	ctl.h.cmsg_len = CMSG_LEN(2 * sizeof(int));
	memcpy(CMSG_DATA(&ctl.h), &ling[2], 2 * sizeof(int));
	if (sendmsg(s, &mh, MSG_NOSIGNAL) != (ssize_t)iov.iov_len)
		_exit(1);
	r = pod_hello(sock_a, "pvc-b", 0);
	pod_send(r, json_pack("{s:s}", "op", "status"), ling[4]);
	for (int i = 0; i < 5; i++)
		close(ling[i]);
	_exit(0);
}

/*
 * Descriptors a mount pod sends may block in close() for as long as it
 * likes (a TCP socket with SO_LINGER and unsent data): given back
 * unasked, with a message that carries none, as a second descriptor, or
 * queued on a connection the keeper closes. None of them holds up another
 * volume: its keeper_status returns and its hello is answered within 1 s.
 */
START_TEST(test_a_descriptor_that_blocks_in_close_holds_up_no_other_volume)
{
	char sock_a[320], sock_b[320];
	struct keeper *k = two_volumes(sock_a, sock_b, sizeof(sock_a));
	json_t *argv = json_pack("[s]", "granary-fuse"), *reply;
	struct status_call call = { .k = k };
	int peer[5], listener[5], ling[5], gate[2], p[2], b, fd;
	struct error err;
	uint64_t t0;
	pthread_t t;
	pid_t pod;

	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(pipe(gate), 0);
	ck_assert_int_eq(keeper_put(k, "pvc-a", argv, "", p[0], 7, &err), ERR_OK);
	ck_assert_int_eq(keeper_put(k, "pvc-b", argv, "", p[0], 8, &err), ERR_OK);
	for (int i = 0; i < 5; i++)
		ling[i] = lingering_socket(&peer[i], &listener[i]);
	pod = hostile_pod(sock_a, gate[0], ling, peer, listener);
	/* The pod's copies only, so that the keeper's close can be the last. */
	for (int i = 0; i < 5; i++)
		close(ling[i]);
	ck_assert_int_eq(write(gate[1], "x", 1), 1);
	usleep(800 * 1000);

	pthread_create(&t, NULL, call_status, &call);
	t0 = retry_now_ms();
	while (!atomic_load(&call.done) && retry_now_ms() - t0 < 1000)
		usleep(10 * 1000);
	ck_assert_msg(atomic_load(&call.done), "keeper_status of another volume blocked");
	pthread_join(t, NULL);
	b = say_hello(sock_b, "pvc-b", 0);
	reply = answer(b, 1000, &fd);
	close(b);
	ck_assert_msg(reply && fd >= 0, "another volume's hello was not answered within 1 s");
	json_decref(reply);
	close(fd);

	/* Their peers gone, the lingering closes return. */
	for (int i = 0; i < 5; i++) {
		close(peer[i]);
		close(listener[i]);
	}
	ck_assert_int_eq(waitpid(pod, NULL, 0), pod);
	keeper_free(k);
	json_decref(argv);
	close(gate[0]);
	close(gate[1]);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/*
 * One pod opening connection after connection on its volume's socket,
 * never saying hello, locks no other volume out; those it holds are closed
 * 5 s on, and its volume's own supervisor is served again.
 */
START_TEST(test_one_volume_pod_cannot_use_up_the_connections)
{
	char sock_a[320], sock_b[320];
	struct keeper *k = two_volumes(sock_a, sock_b, sizeof(sock_a));
	json_t *argv = json_pack("[s]", "granary-fuse"), *reply;
	struct rlimit rl;
	struct error err;
	int flood[1100], p[2], fd;
	size_t n = 0;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
		rl.rlim_cur = 4096;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(keeper_put(k, "pvc-a", argv, "", p[0], 1, &err), ERR_OK);
	ck_assert_int_eq(keeper_put(k, "pvc-b", argv, "", p[0], 2, &err), ERR_OK);
	while (n < sizeof(flood) / sizeof(flood[0]) && (flood[n] = fdchan_connect(sock_a, &err)) >= 0)
		n++;
	usleep(500 * 1000);

	reply = hello(sock_b, "pvc-b", &fd);
	ck_assert_msg(reply && fd >= 0, "volume b's hello refused after %zu connections on a's socket",
		      n);
	json_decref(reply);
	close(fd);

	/* Past the hello deadline the flood is gone: a's own pod gets in. */
	usleep(5600 * 1000);
	reply = hello(sock_a, "pvc-a", &fd);
	ck_assert_msg(reply && fd >= 0, "volume a's own hello refused after the deadline");
	json_decref(reply);
	close(fd);

	keeper_free(k);
	json_decref(argv);
	for (size_t i = 0; i < n; i++)
		close(flood[i]);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/* More than the socket's send buffer holds of the keeper's messages. */
#define PUTS 2000

struct put_calls {
	struct keeper *k;
	json_t *argv;
	int fd;
	atomic_int done;
};

/* Stages pvc-a again and again (PUTS times), a new connection each time:
 * each is sent to pvc-a's granary-mount. */
static void *put_again_and_again(void *arg)
{
	struct put_calls *a = arg;
	struct error err;

	for (uint64_t conn = 2; conn <= PUTS; conn++)
		ck_assert_int_eq(keeper_put(a->k, "pvc-a", a->argv, "", a->fd, conn, &err), ERR_OK);
	atomic_store(&a->done, 1);
	return NULL;
}

/*
 * A granary-mount that stops reading (stopped, or stuck) while its volume
 * is staged again and again: the keeper sends under its lock, and a send
 * that waited for room would hold every volume up. A full queue fails the
 * send and closes that connection; the other volume is served meanwhile,
 * and the volume's granary-mount, connecting again, gets the newest
 * connection.
 */
START_TEST(test_a_granary_mount_that_stops_reading_holds_up_no_volume)
{
	char sock_a[320], sock_b[320];
	struct keeper *k = two_volumes(sock_a, sock_b, sizeof(sock_a));
	struct put_calls calls = { .k = k, .argv = json_pack("[s]", "granary-fuse") };
	struct keeper_status st;
	struct error err;
	json_t *reply, *m;
	int p[2], s, fd, got = 0;
	uint64_t t0;
	pthread_t t;

	ck_assert_int_eq(pipe(p), 0);
	calls.fd = p[0];
	ck_assert_int_eq(keeper_put(k, "pvc-a", calls.argv, "", p[0], 1, &err), ERR_OK);
	ck_assert_int_eq(keeper_put(k, "pvc-b", calls.argv, "", p[0], 1, &err), ERR_OK);
	s = say_hello(sock_a, "pvc-a", 0);
	t0 = retry_now_ms();
	do {
		usleep(20 * 1000);
		keeper_status(k, "pvc-a", &st);
	} while (st.nsup != 1 && retry_now_ms() - t0 < 5000);
	ck_assert_msg(st.nsup == 1, "the hello on pvc-a's socket was not taken");

	pthread_create(&t, NULL, put_again_and_again, &calls);
	t0 = retry_now_ms();
	while (!atomic_load(&calls.done) && retry_now_ms() - t0 < 10000)
		usleep(20 * 1000);
	ck_assert_msg(atomic_load(&calls.done),
		      "%d stages of a volume whose granary-mount stopped reading did not end "
		      "within 10 s",
		      PUTS - 1);
	pthread_join(t, NULL);
	printf("keeper: %d stages past a granary-mount that stopped reading in %llu ms\n", PUTS - 1,
	       (unsigned long long)(retry_now_ms() - t0));
	reply = hello(sock_b, "pvc-b", &fd);
	ck_assert_msg(reply && fd >= 0, "volume b's hello was not answered");
	json_decref(reply);
	close(fd);

	/* What it had queued, then the close. */
	for (;;) {
		fd = -1;
		if (fdchan_recv(s, &m, &fd, 2000, &err) != ERR_OK)
			break;
		got++;
		json_decref(m);
		if (fd >= 0)
			close(fd);
	}
	ck_assert_msg(err.code == ERR_UNAVAILABLE, "the stalled connection was not closed: %s",
		      err.msg);
	ck_assert_msg(got > 0 && got < PUTS, "%d messages queued on the stalled connection", got);
	close(s);
	reply = hello(sock_a, "pvc-a", &fd);
	ck_assert_msg(reply && fd >= 0, "volume a's granary-mount, connecting again, got nothing");
	ck_assert_int_eq(json_integer_value(json_object_get(reply, "conn")), PUTS);
	json_decref(reply);
	close(fd);

	keeper_free(k);
	json_decref(calls.argv);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/* ---- granary-mount's own supervision ------------------------------------ */

/* A volume's socket in work/vol, listened on by a new keeper that holds
 * connection conn (a pipe stands for /dev/fuse: the stand-in daemons
 * below never read it) with argv: the stand-in daemon. */
static struct keeper *one_volume(json_t *argv, int conn_fd, uint64_t conn)
{
	struct keeper *k = NULL;
	struct error err;

	harness_bin_dir(bin_dir, sizeof(bin_dir));
	harness_tmpdir(work, sizeof(work), "/tmp/granary-keeper-XXXXXX");
	snprintf(vdir, sizeof(vdir), "%s/vol", work);
	snprintf(sock, sizeof(sock), "%s/" KEEPER_SOCKET, vdir);
	ck_assert_int_eq(mkdir(vdir, 0700), 0);
	ck_assert_int_eq(keeper_new(&k, &err), ERR_OK);
	ck_assert_msg(keeper_listen(k, VOLUME, sock, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(keeper_put(k, VOLUME, argv, "", conn_fd, conn, &err), ERR_OK);
	return k;
}

/* User plus system CPU time process pid has used, in ms (/proc/PID/stat). */
static long cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "open '%s': %s", path, strerror(errno));
	ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
	fclose(f);
	/* After the name in parentheses: state, then utime and stime are
	 * the 12th and 13th fields. */
	p = strrchr(buf, ')');
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
				&st), 2);
	return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

/* The state letter of process pid ('Z': a zombie), 0 when it is gone. */
static char state_of(pid_t pid)
{
	char path[64], buf[1024], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
	fclose(f);
	return p && p[1] == ' ' ? p[2] : 0;
}

/*
 * A new connection while the old daemon is not reaped yet: granary-mount
 * kills the old one and waits for its end without spinning (under 100 ms
 * of CPU in a second), runs no second daemon meanwhile, and starts one on
 * the new connection as soon as the old is reaped (under 500 ms). The
 * test traces the old daemon (ptrace): killed, it stays a zombie that
 * only its tracer can reap, and its parent hears of its end only then.
 */
START_TEST(test_a_new_connection_waits_for_the_old_daemon_without_spinning)
{
	json_t *argv = json_pack("[s,s,s]", "/bin/sh", "-c", "exec sleep 60");
	int p1[2], p2[2], status;
	struct keeper_status st;
	struct keeper *k;
	struct error err;
	long cpu0, used;
	uint64_t t0, took;
	pid_t sup, d1, d2;

	ck_assert_int_eq(pipe(p1), 0);
	ck_assert_int_eq(pipe(p2), 0);
	k = one_volume(argv, p1[0], 1);
	sup = start_mount(1);
	d1 = wait_daemon(k, 0, NULL);
	ck_assert_msg(d1 > 0, "granary-mount never reported a daemon");
	ck_assert_msg(ptrace(PTRACE_SEIZE, d1, NULL, NULL) == 0, "ptrace %d: %s", (int)d1,
		      strerror(errno));

	/* The node plugin mounted anew: granary-mount gets the new connection. */
	ck_assert_int_eq(keeper_put(k, VOLUME, argv, "", p2[0], 2, &err), ERR_OK);
	t0 = retry_now_ms();
	while (state_of(d1) != 'Z' && retry_now_ms() - t0 < 10000)
		usleep(10 * 1000);
	ck_assert_msg(state_of(d1) == 'Z', "granary-mount did not kill the old daemon");
	cpu0 = cpu_ms(sup);
	usleep(1000 * 1000);
	used = cpu_ms(sup) - cpu0;
	keeper_status(k, VOLUME, &st);
	printf("granary-mount: %ld ms of CPU in 1 s waiting for its old daemon to be reaped\n",
	       used);
	ck_assert_msg(used < 100, "granary-mount spun: %ld ms of CPU in 1 s while its old daemon "
		      "was not reaped", used);
	ck_assert_msg(st.nsup == 1 && st.sup[0].daemon_pid == d1,
		      "a daemon started while the old one was not reaped");

	t0 = retry_now_ms();
	ck_assert_int_eq(waitpid(d1, &status, __WALL), d1);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	d2 = wait_daemon(k, d1, NULL);
	took = retry_now_ms() - t0;
	ck_assert_msg(d2 > 0, "no daemon on the new connection after the old one was reaped");
	printf("granary-mount: the new daemon %llu ms after the old one was reaped\n",
	       (unsigned long long)took);
	ck_assert_msg(took < 500, "the new daemon came %llu ms after the old one was reaped",
		      (unsigned long long)took);

	ck_assert_int_eq(harness_stop(&sup, 10000, NULL), 0);
	keeper_free(k);
	json_decref(argv);
	for (int i = 0; i < 2; i++) {
		close(p1[i]);
		close(p2[i]);
	}
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/* A connection accepted on the listening socket l within timeout_ms, or -1. */
static int accept_within(int l, int timeout_ms)
{
	struct pollfd p = { .fd = l, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	return accept4(l, NULL, NULL, SOCK_CLOEXEC);
}

/* Bytes in file path; 0 when it is not there. */
static long file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/*
 * A keeper that stops reading (a fake: the test listens on the socket,
 * hands over a connection, then reads nothing) holds granary-mount up for
 * FDCHAN_SEND_TIMEOUT_MS at a time, never for good: once the socket's
 * queue is full of status messages (a daemon that ends every millisecond
 * fills it within a second), the send fails, granary-mount logs why,
 * connects again and keeps starting daemons, and SIGTERM stops it.
 */
START_TEST(test_granary_mount_carries_on_past_a_keeper_that_stops_reading)
{
	const char *fast[] = { "--restart_backoff_min=1ms", "--restart_backoff_max=1ms", NULL };
	char script[400], starts[320], logp[320];
	json_t *argv;
	struct error err;
	int l, s1, s2, p[2];
	long before;
	uint64_t t0, ms;
	pid_t sup;

	harness_bin_dir(bin_dir, sizeof(bin_dir));
	harness_tmpdir(work, sizeof(work), "/tmp/granary-keeper-XXXXXX");
	snprintf(sock, sizeof(sock), "%s/" KEEPER_SOCKET, work);
	snprintf(starts, sizeof(starts), "%s/starts", work);
	snprintf(logp, sizeof(logp), "%s/mount-1.log", work);
	/* The stand-in daemon notes its start and ends. */
	snprintf(script, sizeof(script), "echo x >> '%s'", starts);
	argv = json_pack("[s,s,s]", "/bin/sh", "-c", script);
	l = fdchan_listen(sock, &err);
	ck_assert_msg(l >= 0, "%s", err.msg);
	ck_assert_int_eq(pipe(p), 0);
	sup = start_mount_with(1, fast);
	s1 = accept_within(l, 10000);
	ck_assert_msg(s1 >= 0, "granary-mount did not connect");
	send_msg(s1, json_pack("{s:s, s:O, s:s, s:I, s:b}", "op", "fd", "argv", argv, "init_state",
			       "", "conn", (json_int_t)1, "fresh", 0), p[0]);

	s2 = accept_within(l, 15000);
	ck_assert_msg(s2 >= 0, "granary-mount never connected again: it hangs sending to a keeper "
		      "that reads nothing (%ld daemon starts)", file_size(starts) / 2);
	ck_assert_msg(harness_file_contains(logp, "send: the peer's queue is full"),
		      "granary-mount did not log why it dropped the keeper");
	before = file_size(starts) / 2;
	t0 = retry_now_ms();
	while (file_size(starts) / 2 < before + 50 && retry_now_ms() - t0 < 10000)
		usleep(20 * 1000);
	ck_assert_msg(file_size(starts) / 2 >= before + 50,
		      "granary-mount stopped starting daemons after %ld", before);
	ck_assert_msg(harness_stop(&sup, 5000, &ms) == 0, "granary-mount did not stop on SIGTERM");
	printf("stalled keeper: granary-mount connected again after %ld daemon starts, "
	       "then started %ld more; SIGTERM took %llu ms\n", before,
	       file_size(starts) / 2 - before, (unsigned long long)ms);

	close(s1);
	close(s2);
	close(l);
	close(p[0]);
	close(p[1]);
	json_decref(argv);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/*
 * A keeper that stops accepting (a fake: the test listens and fills the
 * queue of connections itself): granary-mount's connect gives up after
 * FDCHAN_SEND_TIMEOUT_MS with a clear log line and tries again later,
 * and SIGTERM stops it meanwhile.
 */
START_TEST(test_granary_mount_carries_on_past_a_keeper_that_stops_accepting)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int l, queued[1100];
	char logp[320];
	struct error err;
	size_t n = 0;
	uint64_t t0, ms;
	pid_t sup;

	harness_bin_dir(bin_dir, sizeof(bin_dir));
	harness_tmpdir(work, sizeof(work), "/tmp/granary-keeper-XXXXXX");
	snprintf(sock, sizeof(sock), "%s/" KEEPER_SOCKET, work);
	snprintf(logp, sizeof(logp), "%s/mount-1.log", work);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
	l = fdchan_listen(sock, &err);
	ck_assert_msg(l >= 0, "%s", err.msg);
	for (; n < sizeof(queued) / sizeof(queued[0]); n++) {
		queued[n] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		ck_assert_int_ge(queued[n], 0);
		if (connect(queued[n], (struct sockaddr *)&a, sizeof(a)) != 0) {
			ck_assert_int_eq(errno, EAGAIN);
			close(queued[n]);
			break;
		}
	}
	ck_assert_msg(n < sizeof(queued) / sizeof(queued[0]),
		      "the queue of connections never filled");

	sup = start_mount(1);
	t0 = retry_now_ms();
	while (!harness_file_contains(logp, "its queue of connections stayed full") &&
	       retry_now_ms() - t0 < 10000)
		usleep(50 * 1000);
	ck_assert_msg(harness_file_contains(logp, "its queue of connections stayed full"),
		      "granary-mount's connect to a keeper that accepts nothing never gave up");
	ck_assert_msg(harness_stop(&sup, 5000, &ms) == 0, "granary-mount did not stop on SIGTERM");
	printf("keeper that accepts nothing: connect gave up after %llu ms or less; SIGTERM took "
	       "%llu ms\n", (unsigned long long)(retry_now_ms() - t0), (unsigned long long)ms);

	for (size_t i = 0; i < n; i++)
		close(queued[i]);
	close(l);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

/* ---- reattach: a volume mounted anew put into containers ---------------- */

#define REATTACH_SOURCE "granary:reattach-test"

/* A tmpfs of source source at path (made with its parents) holding an empty
 * file named marker. 0, or -1 with errno: no assertion, as the containers'
 * processes call it too. */
static int mount_marked(const char *source, const char *path, const char *marker)
{
	char file[1200];
	struct error err;
	int fd;

	if (fileio_mkdirs(path, 0755, &err) != ERR_OK ||
	    mount(source, path, "tmpfs", 0, "size=1m,mode=0755") != 0)
		return -1;
	snprintf(file, sizeof(file), "%s/%s", path, marker);
	fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/*
 * A container: a process in a mount namespace of its own (a copy of the
 * test's) with an ended copy of the volume at root/point: a tmpfs of
 * source REATTACH_SOURCE holding a file "old", whose device the test's
 * namespace does not have. With root other than "/" a child of it
 * chroots there (a root container that chroots, or a container whose
 * root is not its namespace's); *chrooted gets its pid, else 0. Both
 * pause until killed.
 */
static pid_t start_container(const char *root, const char *point, pid_t *chrooted)
{
	char path[1200];
	int ready[2];
	pid_t pid, child = 0;

	snprintf(path, sizeof(path), "%s%s", strcmp(root, "/") == 0 ? "" : root, point);
	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* Gone with the test, failed or not (the chrooted one with its
		 * parent). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || unshare(CLONE_NEWNS) != 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
		    mount_marked(REATTACH_SOURCE, path, "old") != 0)
			_exit(1);
		/* One of the two says it is ready: the chrooted one, if any. */
		if (strcmp(root, "/") != 0) {
			child = fork();
			if (child < 0)
				_exit(1);
			if (child > 0) {
				close(ready[1]);
				for (;;)
					pause();
			}
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || chroot(root) != 0 ||
			    chdir("/") != 0)
				_exit(1);
			child = getpid();
		}
		if (write(ready[1], &child, sizeof(child)) != (ssize_t)sizeof(child))
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	ck_assert_msg(read(ready[0], &child, sizeof(child)) == (ssize_t)sizeof(child),
		      "the container did not start");
	close(ready[0]);
	*chrooted = child;
	return pid;
}

/* Whether file leaf of directory dir is there as process pid sees it
 * (/proc/PID/root/DIR/LEAF, no link at its end followed). */
static bool sees(pid_t pid, const char *dir, const char *leaf)
{
	char path[1400];
	struct stat sb;

	snprintf(path, sizeof(path), "/proc/%d/root%s/%s", (int)pid, dir, leaf);
	return lstat(path, &sb) == 0;
}

/*
 * A layout for the reattach tests, in a mount namespace of the test's own:
 * the new mount at work/staging (a tmpfs holding "new"), and a "mask"
 * (a tmpfs holding "mask", another source) at work/data/vol, outside the
 * containers' root work/root where the volume is at work/data/vol too: a
 * copy acted on from the namespace's root rather than the container's
 * would hit the mask.
 */
static void reattach_layout(char *staging, char *root, char *mask, size_t size)
{
	harness_tmpdir(work, sizeof(work), "/tmp/granary-keeper-XXXXXX");
	ck_assert_msg(unshare(CLONE_NEWNS) == 0, "unshare: %s", strerror(errno));
	ck_assert_int_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
	snprintf(staging, size, "%s/staging", work);
	snprintf(root, size, "%s/root", work);
	snprintf(mask, size, "%s/data/vol", work);
	ck_assert_msg(mount_marked(REATTACH_SOURCE, staging, "new") == 0, "mount '%s': %s", staging,
		      strerror(errno));
	ck_assert_msg(mount_marked("mask", mask, "mask") == 0, "mount '%s': %s", mask,
		      strerror(errno));
	ck_assert_int_eq(mkdir(root, 0755), 0);
}

static void reattach_cleanup(pid_t *pids, size_t n, const char *staging, const char *mask)
{
	for (size_t i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
	for (size_t i = 0; i < n; i++)
		if (pids[i] > 0)
			waitpid(pids[i], NULL, 0);
	ck_assert_int_eq(umount2(staging, MNT_DETACH), 0);
	ck_assert_int_eq(umount2(mask, MNT_DETACH), 0);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}

/*
 * A container whose process chrooted has the new mount put in place of its
 * ended copy inside its own root, and the mount outside that root at the
 * same path (the mask) is left alone; an ordinary container's copy is
 * replaced too, read-only. The scan sees these two processes only (a proc
 * directory of links to theirs).
 */
START_TEST(test_reattach_replaces_a_copy_within_the_containers_root)
{
	char staging[300], root[300], mask[300], point[400], plain[400], proc[300], path[1400];
	struct reattach_result r;
	struct error err;
	pid_t pids[3], chrooted, none;

	reattach_layout(staging, root, mask, sizeof(staging));
	snprintf(point, sizeof(point), "%s/data/vol", work);
	snprintf(plain, sizeof(plain), "%s/plain/vol", work);
	pids[0] = start_container(root, point, &chrooted);
	pids[1] = chrooted;
	pids[2] = start_container("/", plain, &none);
	snprintf(proc, sizeof(proc), "%s/proc", work);
	ck_assert_int_eq(mkdir(proc, 0755), 0);
	for (int i = 1; i < 3; i++) {
		char link[400], target[64];

		snprintf(link, sizeof(link), "%s/%d", proc, (int)pids[i]);
		snprintf(target, sizeof(target), "/proc/%d", (int)pids[i]);
		ck_assert_int_eq(symlink(target, link), 0);
	}

	ck_assert_int_eq(reattach_volume(proc, "tmpfs", REATTACH_SOURCE, staging, &r, &err),
			 ERR_OK);
	printf("reattach: found %u, replaced %u%s%s\n", r.found, r.replaced,
	       r.first_error[0] ? ": " : "", r.first_error);
	ck_assert_msg(r.found == 2 && r.replaced == 2, "found %u, replaced %u: %s", r.found,
		      r.replaced, r.first_error);
	ck_assert_msg(sees(chrooted, point, "new") && !sees(chrooted, point, "old"),
		      "the chrooted process does not see the new mount at '%s'", point);
	ck_assert_msg(sees(pids[0], mask, "mask"),
		      "the mount outside the container's root at '%s' was replaced", mask);
	ck_assert_msg(sees(pids[2], plain, "new") && !sees(pids[2], plain, "old"),
		      "the ordinary container does not see the new mount at '%s'", plain);
	snprintf(path, sizeof(path), "/proc/%d/root%s/x", (int)pids[2], plain);
	ck_assert_int_eq(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644), -1);
	ck_assert_int_eq(errno, EROFS);

	reattach_cleanup(pids, 3, staging, mask);
}
END_TEST

/*
 * A container that swaps a component of its copy's mount point for a
 * symbolic link (here to the same path outside its root, where the mask
 * is) after mountinfo was read: the reattach refuses, naming the link, and
 * neither the mask nor the ended copy moves. Swapped for a plain directory
 * instead, it refuses as that is not the mount mountinfo listed. The scan
 * reads mountinfo as it was before the swap (a copy in a proc directory
 * whose ns and root lead to the container's process).
 */
START_TEST(test_reattach_refuses_a_mount_point_swapped_for_a_link)
{
	char staging[300], root[300], mask[300], point[400], proc[300], path[1400], data[1400];
	char moved[400], text[16384];
	struct reattach_result r;
	struct error err;
	pid_t pids[2], chrooted;
	size_t len;
	FILE *f;

	reattach_layout(staging, root, mask, sizeof(staging));
	snprintf(point, sizeof(point), "%s/data/vol", work);
	pids[0] = start_container(root, point, &chrooted);
	pids[1] = chrooted;
	snprintf(proc, sizeof(proc), "%s/proc/%d", work, (int)chrooted);
	ck_assert_int_eq(fileio_mkdirs(proc, 0755, &err), ERR_OK);
	snprintf(path, sizeof(path), "/proc/%d/mountinfo", (int)chrooted);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	len = fread(text, 1, sizeof(text), f);
	fclose(f);
	ck_assert(len > 0 && len < sizeof(text));
	snprintf(path, sizeof(path), "%s/mountinfo", proc);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	fclose(f);
	for (int i = 0; i < 2; i++) {
		const char *name = i ? "root" : "ns";
		char target[64];

		snprintf(path, sizeof(path), "%s/%s", proc, name);
		snprintf(target, sizeof(target), "/proc/%d/%s", (int)chrooted, name);
		ck_assert_int_eq(symlink(target, path), 0);
	}
	snprintf(proc, sizeof(proc), "%s/proc", work);

	/* The swap: work/data in the container's root moved aside (the ended
	 * copy with it), a link in its place to work/data outside. */
	snprintf(data, sizeof(data), "%s%s/data", root, work);
	snprintf(moved, sizeof(moved), "%s/data.old/vol", work);
	snprintf(path, sizeof(path), "%s%s/data.old", root, work);
	ck_assert_int_eq(rename(data, path), 0);
	snprintf(path, sizeof(path), "%s/data", work);
	ck_assert_int_eq(symlink(path, data), 0);

	ck_assert_int_eq(reattach_volume(proc, "tmpfs", REATTACH_SOURCE, staging, &r, &err),
			 ERR_OK);
	printf("reattach through a link: found %u, replaced %u: %s\n", r.found, r.replaced,
	       r.first_error);
	ck_assert_msg(r.found == 1 && r.replaced == 0, "found %u, replaced %u", r.found,
		      r.replaced);
	ck_assert_msg(strstr(r.first_error, point) && strstr(r.first_error, "symbolic link"),
		      "the refusal does not name the link: %s", r.first_error);
	ck_assert_msg(sees(pids[0], mask, "mask") && !sees(pids[0], mask, "new"),
		      "the mount outside the container's root at '%s' was replaced", mask);
	ck_assert_msg(sees(chrooted, moved, "old"), "the ended copy at '%s' was detached", moved);

	/* A plain directory in its place: not the mount mountinfo listed. */
	ck_assert_int_eq(unlink(data), 0);
	snprintf(path, sizeof(path), "%s/vol", data);
	ck_assert_int_eq(fileio_mkdirs(path, 0755, &err), ERR_OK);
	ck_assert_int_eq(reattach_volume(proc, "tmpfs", REATTACH_SOURCE, staging, &r, &err),
			 ERR_OK);
	printf("reattach onto another directory: found %u, replaced %u: %s\n", r.found, r.replaced,
	       r.first_error);
	ck_assert_msg(r.found == 1 && r.replaced == 0, "found %u, replaced %u", r.found,
		      r.replaced);
	ck_assert_msg(strstr(r.first_error, "check it is the ended mount: mount id"),
		      "the refusal does not say what is there: %s", r.first_error);
	ck_assert_msg(!sees(chrooted, point, "new") && sees(chrooted, moved, "old"),
		      "the reattach acted on another directory than the ended copy");

	reattach_cleanup(pids, 2, staging, mask);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi_keeper");
	TCase *tc = tcase_create("keeper");
	TCase *hostile = tcase_create("hostile");
	TCase *supervisor = tcase_create("supervisor");
	TCase *reattach = tcase_create("reattach");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_the_connection_outlives_every_single_restart);
	tcase_add_test(tc, test_a_volume_socket_hands_out_that_volume_only);
	suite_add_tcase(s, tc);
	/* What a mount pod's attacker sends over its volume's socket. */
	tcase_set_timeout(hostile, 60);
	tcase_add_test(hostile, test_only_an_asked_for_dev_fuse_is_taken_back);
	tcase_add_test(hostile, test_a_descriptor_that_blocks_in_close_holds_up_no_other_volume);
	tcase_add_test(hostile, test_one_volume_pod_cannot_use_up_the_connections);
	tcase_add_test(hostile, test_a_granary_mount_that_stops_reading_holds_up_no_volume);
	suite_add_tcase(s, hostile);
	/* granary-mount's own loop: a daemon not yet reaped, a stalled keeper. */
	tcase_set_timeout(supervisor, 60);
	tcase_add_test(supervisor, test_a_new_connection_waits_for_the_old_daemon_without_spinning);
	tcase_add_test(supervisor, test_granary_mount_carries_on_past_a_keeper_that_stops_reading);
	tcase_add_test(supervisor,
		       test_granary_mount_carries_on_past_a_keeper_that_stops_accepting);
	suite_add_tcase(s, supervisor);
	/* A volume mounted anew put into containers (csi/reattach.h). */
	tcase_set_timeout(reattach, 60);
	tcase_add_test(reattach, test_reattach_replaces_a_copy_within_the_containers_root);
	tcase_add_test(reattach, test_reattach_refuses_a_mount_point_swapped_for_a_link);
	suite_add_tcase(s, reattach);
	return check_main_run(s);
}
