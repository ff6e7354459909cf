/*
 * reattach.c - a volume mounted anew reaches the containers that kept the
 * ended mount (reattach.h).
 */
#include "csi/reattach.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"

#define NAMESPACES_MAX 4096

bool reattach_is_ended(const struct fusemount_entry *e, const char *fstype, const char *source,
		       const struct reattach_live *live)
{
	if (strcmp(e->fstype, fstype) != 0 || strcmp(e->source, source) != 0)
		return false;
	for (size_t i = 0; i < live->n; i++)
		if (live->major[i] == e->major && live->minor[i] == e->minor)
			return false;
	return true;
}

/* The devices of every mount of fstype in this process's namespace. */
static void live_mounts(const char *fstype, struct reattach_live *live)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	struct fusemount_entry e;
	char *line = NULL;
	size_t cap = 0;

	live->n = 0;
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0 && live->n < REATTACH_LIVE_MAX)
		if (fusemount_parse_entry(line, &e) && strcmp(e.fstype, fstype) == 0) {
			live->major[live->n] = e.major;
			live->minor[live->n++] = e.minor;
		}
	free(line);
	fclose(f);
}

/* The steps of a replacement, as the one that failed is reported. */
enum step {
	STEP_FORK = -1,
	STEP_PROCESS = 1,
	STEP_IS_ROOT,
	STEP_RESOLVE,
	STEP_NOT_THE_MOUNT,
	STEP_CLONE,
	STEP_READONLY,
	STEP_NAMESPACE,
	STEP_DETACH,
	STEP_REOPEN,
	STEP_NOT_THE_PARENT,
	STEP_MOVE,
};

/* What failed: the step, errno, and for a mount id that did not match,
 * the one found there. */
struct outcome {
	int step, errnum, found;
};

static const char *step_name(int step)
{
	switch (step) {
	case STEP_PROCESS:
		return "open the process's root and mount namespace";
	case STEP_IS_ROOT:
		return "it is the process's root; left alone";
	case STEP_RESOLVE:
		return "open it from the process's root without following links (openat2)";
	case STEP_NOT_THE_MOUNT:
		return "check it is the ended mount";
	case STEP_CLONE:
		return "clone the new mount (open_tree)";
	case STEP_READONLY:
		return "make the clone read-only (mount_setattr)";
	case STEP_NAMESPACE:
		return "enter the container's mount namespace (setns)";
	case STEP_DETACH:
		return "detach the ended mount (umount2)";
	case STEP_REOPEN:
		return "open the mount point again once detached (openat2)";
	case STEP_NOT_THE_PARENT:
		return "check the mount point is on the mount beneath";
	case STEP_MOVE:
		return "move the clone in its place (move_mount)";
	}
	return "start a child (fork)";
}

/* Opens name under dirfd as O_PATH, following no symbolic or magic link
 * and never leaving dirfd (in_root: ".." and absolute names stop at it, as
 * for a process whose root it is). -1 with errno (ELOOP: a link). */
static int open_nofollow(int dirfd, const char *name, bool in_root)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = (in_root ? RESOLVE_IN_ROOT : RESOLVE_BENEATH) | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};

	return (int)syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
}

/* The mount id of what fd names, or -1. DONT_SYNC and no attribute asked
 * for: an ended FUSE mount answers nothing, and is not asked. */
static int mount_id_of(int fd)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID, &stx) != 0)
		return -1;
	return (stx.stx_mask & STATX_MNT_ID) ? (int)stx.stx_mnt_id : -1;
}

/*
 * In a child: clone src, read-only, into the mount namespace nsfd names,
 * in place of the mount that target (checked by the caller) opened; the
 * mount point is name under dir, opened again once the ended mount is
 * detached and checked to be on parent_id. Fills *out with the failed step
 * (0: done). Only system calls after the fork (the plugin has threads).
 */
static void replace(const char *src, int nsfd, int dir, const char *name, int target,
		    int parent_id, struct outcome *out)
{
	struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
					     MOUNT_ATTR_NODEV };
	char target_name[16];
	int pipefd[2], status;
	pid_t pid;

	/* The ended mount is detached through its descriptor, which the
	 * child reaches by name in its /proc/self/fd. */
	snprintf(target_name, sizeof(target_name), "%d", target);
	*out = (struct outcome){ 0, 0, 0 };
	if (pipe2(pipefd, O_CLOEXEC) != 0) {
		*out = (struct outcome){ STEP_FORK, errno, 0 };
		return;
	}
	pid = fork();
	if (pid < 0) {
		*out = (struct outcome){ STEP_FORK, errno, 0 };
		close(pipefd[0]);
		close(pipefd[1]);
		return;
	}
	if (pid == 0) {
		int tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		int fds = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC), point = -1;
		struct outcome r = { 0, 0, 0 };

		if (tree < 0)
			r.step = STEP_CLONE;
		else if (mount_setattr(tree, "", AT_EMPTY_PATH, &ro, sizeof(ro)) != 0)
			r.step = STEP_READONLY;
		else if (setns(nsfd, CLONE_NEWNS) != 0)
			r.step = STEP_NAMESPACE;
		else if (fds < 0 || fchdir(fds) != 0 ||
			 (umount2(target_name, MNT_DETACH) != 0 && errno != EINVAL))
			r.step = STEP_DETACH;
		else if ((point = open_nofollow(dir, name, false)) < 0)
			r.step = STEP_REOPEN;
		else if ((r.found = mount_id_of(point)) != parent_id)
			r.step = STEP_NOT_THE_PARENT;
		else if (move_mount(tree, "", point, "",
				    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
			r.step = STEP_MOVE;
		r.errnum = r.step ? errno : 0;
		if (write(pipefd[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(2);
		_exit(r.step ? 1 : 0);
	}
	close(pipefd[1]);
	if (read(pipefd[0], out, sizeof(*out)) != (ssize_t)sizeof(*out))
		*out = (struct outcome){ STEP_FORK, EPIPE, 0 };
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
}

/*
 * The ended copy e of the process whose root is rootfd, replaced: its
 * mount point opened from that root with no link followed (a container
 * may have swapped a component for one since its mountinfo was read, or
 * chrooted) and checked to be the mount mountinfo listed, before anything
 * is detached.
 */
static void replace_copy(const char *src, int nsfd, int rootfd, const struct fusemount_entry *e,
			 struct outcome *out)
{
	const char *slash = strrchr(e->point, '/');
	char dir[sizeof(e->point)];
	int dirfd = -1, target = -1;

	*out = (struct outcome){ 0, 0, 0 };
	if (!slash || !slash[1]) {
		out->step = STEP_IS_ROOT;
		return;
	}
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - e->point), e->point);
	if ((dirfd = open_nofollow(rootfd, dir[0] ? dir : "/", true)) < 0 ||
	    (target = open_nofollow(dirfd, slash + 1, false)) < 0)
		*out = (struct outcome){ STEP_RESOLVE, errno, 0 };
	else if ((out->found = mount_id_of(target)) != e->mount_id)
		out->step = STEP_NOT_THE_MOUNT;
	else
		replace(src, nsfd, dirfd, slash + 1, target, e->parent_id, out);
	if (target >= 0)
		close(target);
	if (dirfd >= 0)
		close(dirfd);
}

/* Why a replacement failed, in words, into buf. */
static void describe(const struct outcome *o, int mount_id, int parent_id, char *buf, size_t size)
{
	if (o->step == STEP_RESOLVE && o->errnum == ELOOP)
		snprintf(buf, size, "%s: a component is a symbolic link; not followed",
			 step_name(o->step));
	else if (o->step == STEP_IS_ROOT)
		snprintf(buf, size, "%s", step_name(o->step));
	else if (o->step == STEP_NOT_THE_MOUNT || o->step == STEP_NOT_THE_PARENT)
		snprintf(buf, size,
			 "%s: mount id %d there, not %d (moved since mountinfo was read)",
			 step_name(o->step), o->found,
			 o->step == STEP_NOT_THE_MOUNT ? mount_id : parent_id);
	else
		snprintf(buf, size, "%s: %s", step_name(o->step), strerror(o->errnum));
}

/* The mount namespace of process dir (its inode), or 0. */
static ino_t namespace_of(const char *proc, const char *pid)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s/ns/mnt", proc, pid);
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* Every ended copy in the mount namespace of pid, replaced. */
static void reattach_in(const char *proc, const char *pid, const char *fstype,
			const char *source, const char *staging,
			const struct reattach_live *live, struct reattach_result *out)
{
	char path[PATH_MAX], src[PATH_MAX], *line = NULL;
	int piddir, fd, nsfd, rootfd, saved;
	struct fusemount_entry e;
	size_t cap = 0;
	FILE *f = NULL;

	/* Its mountinfo, namespace and root all from one directory: the same
	 * process's, should its pid be reused meanwhile. */
	snprintf(path, sizeof(path), "%s/%s", proc, pid);
	piddir = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	fd = piddir < 0 ? -1 : openat(piddir, "mountinfo", O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && !(f = fdopen(fd, "re")))
		close(fd);
	if (!f) {
		if (piddir >= 0)
			close(piddir);
		return; /* gone meanwhile */
	}
	nsfd = openat(piddir, "ns/mnt", O_RDONLY | O_CLOEXEC);
	rootfd = nsfd < 0 ? -1 : openat(piddir, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
	saved = errno; /* of the one that failed, if one did */
	while (getline(&line, &cap, f) > 0) {
		struct outcome o = { STEP_PROCESS, saved, 0 };
		char why[ERROR_MSG_MAX];

		if (!fusemount_parse_entry(line, &e) || !reattach_is_ended(&e, fstype, source, live))
			continue;
		out->found++;
		snprintf(src, sizeof(src), "%s%s", staging, strcmp(e.root, "/") == 0 ? "" : e.root);
		if (rootfd >= 0)
			replace_copy(src, nsfd, rootfd, &e, &o);
		if (o.step == 0) {
			out->replaced++;
			log_info("a container's ended mount replaced by the new one",
				 LOG_S("source", source), LOG_S("pid", pid), LOG_S("mount_point", e.point),
				 LOG_S("root", e.root));
			continue;
		}
		if (out->first_error[0])
			continue;
		describe(&o, e.mount_id, e.parent_id, why, sizeof(why));
		snprintf(out->first_error, sizeof(out->first_error),
			 "process %s, mount point '%s': %s", pid, e.point, why);
	}
	if (rootfd >= 0)
		close(rootfd);
	if (nsfd >= 0)
		close(nsfd);
	close(piddir);
	free(line);
	fclose(f);
}

enum error_code reattach_volume(const char *proc, const char *fstype, const char *source,
				const char *staging, struct reattach_result *out,
				struct error *err)
{
	ino_t *seen = calloc(NAMESPACES_MAX, sizeof(*seen));
	size_t nseen = 0;
	struct reattach_live live;
	struct dirent *d;
	DIR *dir;

	memset(out, 0, sizeof(*out));
	if (!seen)
		return error_set(err, ERR_NOMEM, "reattach: out of memory");
	dir = opendir(proc);
	if (!dir) {
		free(seen);
		return error_set(err, error_from_errno(errno), "reattach: open '%s': %s", proc,
				 strerror(errno));
	}
	live_mounts(fstype, &live);
	seen[nseen++] = namespace_of(proc, "self");
	while ((d = readdir(dir))) {
		ino_t ns;
		size_t i;

		if (!isdigit((unsigned char)d->d_name[0]))
			continue;
		ns = namespace_of(proc, d->d_name);
		for (i = 0; ns && i < nseen && seen[i] != ns; i++)
			;
		if (!ns || i < nseen)
			continue;
		if (nseen < NAMESPACES_MAX)
			seen[nseen++] = ns;
		reattach_in(proc, d->d_name, fstype, source, staging, &live, out);
	}
	closedir(dir);
	free(seen);
	return ERR_OK;
}
