/*
 * node_mount.c - the node plugin's paths and mounts: allowed roots,
 * mountinfo look-ups, the FUSE mount of a staging path, read-only binds.
 */
#include "csi/node_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "common/fusemount.h"
#include "common/log.h"

#define FUSE_MOUNT_OPTS "rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions"

/* ---- paths and mounts ---------------------------------------------------- */

bool node_path_allowed(const char *path, char *const *roots, size_t nroots)
{
	size_t len = path ? strlen(path) : 0;

	if (len < 2 || path[0] != '/' || len >= PATH_MAX_LEN)
		return false;
	/* No empty, "." or ".." component anywhere. */
	for (const char *p = path + 1; *p;) {
		size_t l = strcspn(p, "/");

		if ((l == 0 && p[l] == '/') || (l == 1 && p[0] == '.') ||
		    (l == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += l;
		if (*p == '/')
			p++;
	}
	for (size_t i = 0; i < nroots; i++) {
		size_t rl = strlen(roots[i]);

		if (rl == 1 && roots[i][0] == '/')
			return true;
		if (strncmp(path, roots[i], rl) == 0 && path[rl] == '/' && path[rl + 1] != '\0')
			return true;
	}
	return false;
}

/* A path without its trailing '/' (kubelet does not send one; tests might). */
void clean_path(const char *in, char *out, size_t size)
{
	size_t len;

	snprintf(out, size, "%s", in);
	len = strlen(out);
	while (len > 1 && out[len - 1] == '/')
		out[--len] = '\0';
}

/*
 * True when path is a mount point in this mount namespace; fstype (may be
 * NULL) gets the type of the topmost mount there (fusemount_lookup).
 */
bool mount_lookup(const char *path, char *fstype, size_t size)
{
	unsigned major, minor;

	return fusemount_lookup(path, &major, &minor, fstype, size);
}

/* Unmounts every mount stacked on path; lazily when one is busy. */
enum error_code unmount_all(const char *path, struct error *err)
{
	for (int i = 0; i < 16 && mount_lookup(path, NULL, 0); i++) {
		if (umount2(path, 0) == 0)
			continue;
		if (errno == EBUSY && umount2(path, MNT_DETACH) == 0) {
			log_warn("mount busy; detached it", LOG_S("path", path));
			continue;
		}
		if (errno == EINVAL || errno == ENOENT)
			return ERR_OK;
		return error_set(err, error_from_errno(errno), "unmount '%s': %s", path,
				 strerror(errno));
	}
	return ERR_OK;
}

/* Opens /dev/fuse and mounts the dataset at path on it. */
enum error_code mount_fuse(const struct node_config *cfg, const char *dataset,
			   const char *path, int *fd_out, struct error *err)
{
	struct error raerr;
	char opts[256], source[300];
	int fd, saved;

	fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return error_set(err, error_from_errno(errno), "open '/dev/fuse': %s", strerror(errno));
	snprintf(opts, sizeof(opts), "fd=%d,%s,max_read=%llu", fd, FUSE_MOUNT_OPTS,
		 (unsigned long long)(cfg->max_read ? cfg->max_read : FUSE_MAX_READ_DEFAULT));
	snprintf(source, sizeof(source), "granary:%s", dataset);
	if (mount(source, path, FUSE_TYPE, MS_RDONLY | MS_NOSUID | MS_NODEV, opts) != 0) {
		saved = errno;
		close(fd);
		return error_set(err, error_from_errno(saved), "mount '%s' on '%s': %s", source, path,
				 strerror(saved));
	}
	/* granary-fuse on /dev/fd/N cannot: it may not see the path. */
	if (cfg->read_ahead && fusemount_set_read_ahead(path, cfg->read_ahead, &raerr) != ERR_OK)
		log_warn("cannot raise the mount's read-ahead", LOG_S("cause", raerr.msg));
	*fd_out = fd;
	return ERR_OK;
}

/* Read-only bind mount of staging at target. */
enum error_code bind_readonly(const char *staging, const char *target, struct error *err)
{
	int saved;

	if (mount(staging, target, "none", MS_BIND, NULL) != 0)
		return error_set(err, error_from_errno(errno), "bind '%s' at '%s': %s", staging, target,
				 strerror(errno));
	/* A bind mount takes its flags only on a remount. */
	if (mount("none", target, "none", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
		  NULL) != 0) {
		saved = errno;
		umount2(target, MNT_DETACH);
		return error_set(err, error_from_errno(saved), "remount '%s' read-only: %s", target,
				 strerror(saved));
	}
	return ERR_OK;
}
