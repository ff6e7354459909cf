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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
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

/* The steps of a replacement, as the child reports the one that failed. */
enum step { STEP_CLONE = 1, STEP_READONLY, STEP_NAMESPACE, STEP_DETACH, STEP_MOVE };

static const char *step_name(int step)
{
	switch (step) {
	case STEP_CLONE:
		return "clone the new mount (open_tree)";
	case STEP_READONLY:
		return "make the clone read-only (mount_setattr)";
	case STEP_NAMESPACE:
		return "enter the container's mount namespace (setns)";
	case STEP_DETACH:
		return "detach the ended mount (umount2)";
	case STEP_MOVE:
		return "move the clone in its place (move_mount)";
	}
	return "start a child (fork)";
}

/*
 * In a child: clone src, read-only, into the mount namespace nsfd names,
 * in place of the mount at point. Returns 0, or the failed step with
 * *errnum. Only system calls after the fork (the plugin has threads).
 */
static int replace(const char *src, int nsfd, const char *point, int *errnum)
{
	struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
					     MOUNT_ATTR_NODEV };
	struct { int step, errnum; } r = { 0, 0 };
	int pipefd[2], status;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) != 0) {
		*errnum = errno;
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		*errnum = errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return -1;
	}
	if (pid == 0) {
		int tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);

		if (tree < 0)
			r.step = STEP_CLONE;
		else if (mount_setattr(tree, "", AT_EMPTY_PATH, &ro, sizeof(ro)) != 0)
			r.step = STEP_READONLY;
		else if (setns(nsfd, CLONE_NEWNS) != 0)
			r.step = STEP_NAMESPACE;
		else if (umount2(point, MNT_DETACH) != 0 && errno != EINVAL)
			r.step = STEP_DETACH;
		else if (move_mount(tree, "", AT_FDCWD, point, MOVE_MOUNT_F_EMPTY_PATH) != 0)
			r.step = STEP_MOVE;
		r.errnum = r.step ? errno : 0;
		if (write(pipefd[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(2);
		_exit(r.step ? 1 : 0);
	}
	close(pipefd[1]);
	if (read(pipefd[0], &r, sizeof(r)) != (ssize_t)sizeof(r))
		r = (typeof(r)){ -1, EPIPE };
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	*errnum = r.errnum;
	return r.step;
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
	struct fusemount_entry e;
	size_t cap = 0;
	int nsfd;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/mountinfo", proc, pid);
	f = fopen(path, "re");
	if (!f)
		return; /* gone meanwhile */
	snprintf(path, sizeof(path), "%s/%s/ns/mnt", proc, pid);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	while (getline(&line, &cap, f) > 0) {
		int step, errnum = 0;

		if (!fusemount_parse_entry(line, &e) || !reattach_is_ended(&e, fstype, source, live))
			continue;
		out->found++;
		snprintf(src, sizeof(src), "%s%s", staging, strcmp(e.root, "/") == 0 ? "" : e.root);
		step = nsfd < 0 ? STEP_NAMESPACE : replace(src, nsfd, e.point, &errnum);
		if (nsfd < 0)
			errnum = errno;
		if (step == 0) {
			out->replaced++;
			log_info("a container's ended mount replaced by the new one",
				 LOG_S("source", source), LOG_S("pid", pid), LOG_S("mount_point", e.point),
				 LOG_S("root", e.root));
			continue;
		}
		if (!out->first_error[0])
			snprintf(out->first_error, sizeof(out->first_error),
				 "process %s, mount point '%s': %s: %s", pid, e.point, step_name(step),
				 strerror(errnum));
	}
	if (nsfd >= 0)
		close(nsfd);
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
