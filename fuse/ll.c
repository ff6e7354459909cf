/*
 * ll.c - libfuse3 low-level operations over struct mountfs.
 *
 * Each operation parses its arguments, calls the core, maps an error with
 * error_to_errno and replies; nothing else happens here.
 */
#define FUSE_USE_VERSION 312

#include "fuse/ll.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/fusemount.h"
#include "common/cpu.h"
#include "common/log.h"

struct ll {
	struct mountfs *fs;
	const struct ll_config *cfg;
	bool no_open; /* the kernel opens files without asking (op_init) */
};

static struct ll *ll_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void to_stat(const struct mountfs_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blksize = 1 << 20;
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
	st->st_mtim.tv_sec = a->mtime;
	st->st_ctim.tv_sec = a->mtime;
	st->st_atim.tv_sec = a->mtime;
}

static void to_entry(const struct ll *ll, const struct mountfs_attr *a,
		     struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino;
	e->generation = 1;
	e->entry_timeout = ll->cfg->entry_timeout;
	e->attr_timeout = ll->cfg->attr_timeout;
	to_stat(a, &e->attr);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ll *ll = userdata;

	/* Setting max_read here as well as in -o max_read is what libfuse
	 * 3.14 needs for the option to take (docs/fuse-tuning.md). */
	conn->max_read = ll->cfg->max_read;
	conn->max_readahead = ll->cfg->max_read;
	conn->max_background = ll->cfg->max_background;
	conn->congestion_threshold = ll->cfg->max_background * 3 / 4;
	conn->want |= FUSE_CAP_ASYNC_READ;
	if (ll->cfg->splice && (conn->capable & FUSE_CAP_SPLICE_WRITE))
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	else
		conn->want &= ~(unsigned)FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	/* The dataset never changes under the mount: no invalidation on
	 * attribute refresh, no write-back machinery. */
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/* Files open without a round trip (and close without a release) once
	 * an open is answered ENOSYS; the kernel then keeps every file's
	 * pages across opens, which is what keep_cache asks anyway. */
	if (ll->cfg->no_open && ll->cfg->keep_cache && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) {
		ll->no_open = true;
		mountfs_set_no_open(ll->fs);
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ll *ll = ll_of(req);
	struct mountfs_attr a;
	struct fuse_entry_param e;
	enum error_code rc = mountfs_lookup(ll->fs, parent, name, &a);

	if (rc != ERR_OK) {
		if (rc == ERR_NOT_FOUND) {
			/* A negative entry cached as long as positive ones:
			 * the dataset cannot gain the name later. */
			memset(&e, 0, sizeof(e));
			e.entry_timeout = ll->cfg->entry_timeout;
			fuse_reply_entry(req, &e);
			return;
		}
		fuse_reply_err(req, error_to_errno(rc));
		return;
	}
	to_entry(ll, &a, &e);
	fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	/* Inodes are the snapshot's and live as long as the mount. */
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ll *ll = ll_of(req);
	struct mountfs_attr a;
	struct stat st;
	enum error_code rc = mountfs_getattr(ll->fs, ino, &a);

	(void)fi;
	if (rc != ERR_OK) {
		fuse_reply_err(req, error_to_errno(rc));
		return;
	}
	to_stat(&a, &st);
	fuse_reply_attr(req, &st, ll->cfg->attr_timeout);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ll *ll = ll_of(req);
	struct error err;
	bool for_write = (fi->flags & O_ACCMODE) != O_RDONLY ||
			 (fi->flags & (O_TRUNC | O_APPEND | O_CREAT));
	enum error_code rc = mountfs_open(ll->fs, ino, for_write, &err);

	if (rc != ERR_OK) {
		fuse_reply_err(req, rc == ERR_INVALID ? EISDIR : error_to_errno(rc));
		return;
	}
	if (ll->no_open) {
		/* No open state: reads make their own (mountfs_set_no_open).
		 * The kernel takes ENOSYS as "open them all yourself". */
		mountfs_release(ll->fs, ino);
		fuse_reply_err(req, ENOSYS);
		return;
	}
	/* The handle is the inode, valid in a successor daemon too. */
	fi->fh = ino;
	fi->keep_cache = ll->cfg->keep_cache;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

/*
 * Each loop thread's reply buffer (fileio_thread_buf): page-aligned, since
 * misaligned reply buffers measurably cost (MEASURED.md), and at least
 * one huge page, since the kernel pins the reply buffer's pages to copy a
 * reply. libfuse ends idle threads; the buffer goes with its thread.
 */
#define READ_BUF_MIN ((size_t)2 << 20)

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ll *ll = ll_of(req);
	struct reader_loan loan = { 0 };
	struct error err;
	size_t got = 0;
	enum error_code rc;
	const char *out;
	char *buf;

	/* By ino, not fi->fh: the handle is the inode when op_open gave it,
	 * 0 when the kernel opens files itself (no_open). */
	buf = fileio_thread_buf(FILEIO_BUF_REPLY, size < READ_BUF_MIN ? READ_BUF_MIN : size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* The kernel asks again for pages of a failed buffered read, never
	 * for an O_DIRECT one (struct reader_stream's caller). */
	rc = mountfs_read(ll->fs, ino,
			  (fi->flags & O_DIRECT) ? 0 : (uint32_t)fuse_req_ctx(req)->pid,
			  (uint64_t)off, size, buf, &loan, &got, &err);
	if (rc != ERR_OK) {
		log_debug("read failed", LOG_S("cause", err.msg)); /* the reader logged it */
		fuse_reply_err(req, error_to_errno(rc));
		return;
	}
	/* A block fetched into memory just now is replied from where it is,
	 * not copied into buf first. */
	out = loan.data ? loan.data : buf;
	if (ll->cfg->splice) {
		/* libfuse vmsplices the buffer into a pipe and on to the
		 * device when the pipe can hold the reply (fuse-tuning.md). */
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(got);

		bv.buf[0].mem = (void *)out;
		fuse_reply_data(req, &bv, 0);
	} else {
		fuse_reply_buf(req, out, got);
	}
	reader_loan_end(&loan);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	mountfs_release(ll_of(req)->fs, fi->fh);
	fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ll *ll = ll_of(req);
	struct mountfs_attr a;
	enum error_code rc = mountfs_getattr(ll->fs, ino, &a);

	if (rc != ERR_OK || !a.is_dir) {
		fuse_reply_err(req, rc != ERR_OK ? error_to_errno(rc) : ENOTDIR);
		return;
	}
	/* Listings never change: let the kernel keep them. */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

struct dir_fill {
	struct ll *ll;
	fuse_req_t req;
	char *buf;
	size_t size, used;
	bool plus;
};

static int add_entry(struct dir_fill *d, const char *name, const struct mountfs_attr *a,
		     uint64_t next_off)
{
	size_t n;

	if (d->plus) {
		struct fuse_entry_param e;

		to_entry(d->ll, a, &e);
		n = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name,
					   &e, (off_t)next_off);
	} else {
		struct stat st;

		to_stat(a, &st);
		n = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, &st,
				      (off_t)next_off);
	}
	if (n > d->size - d->used)
		return 1; /* full: the kernel asks again from next_off */
	d->used += n;
	return 0;
}

/* Offsets: 1 is after ".", 2 after "..", 3 + i after child i. */
static int fill_child(const char *name, uint64_t ino, bool is_dir, uint64_t next_off,
		      void *arg)
{
	struct dir_fill *d = arg;
	struct mountfs_attr a;

	(void)is_dir;
	if (mountfs_getattr(d->ll->fs, ino, &a) != ERR_OK)
		return 1;
	return add_entry(d, name, &a, next_off + 2);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct ll *ll = ll_of(req);
	struct dir_fill d = { .ll = ll, .req = req, .size = size, .plus = plus };
	struct mountfs_attr self, parent;
	struct snapshot_entry_info info;
	enum error_code rc;

	d.buf = malloc(size);
	if (!d.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = mountfs_getattr(ll->fs, ino, &self);
	if (rc == ERR_OK && snapshot_stat(mountfs_snapshot(ll->fs), ino, &info) == ERR_OK)
		rc = mountfs_getattr(ll->fs, info.parent, &parent);
	if (rc != ERR_OK) {
		free(d.buf);
		fuse_reply_err(req, error_to_errno(rc));
		return;
	}
	if (off < 1 && add_entry(&d, ".", &self, 1) != 0)
		goto reply;
	if (off < 2 && add_entry(&d, "..", &parent, 2) != 0)
		goto reply;
	rc = mountfs_readdir(ll->fs, ino, off > 2 ? (uint64_t)off - 2 : 0, fill_child, &d);
	if (rc != ERR_OK) {
		free(d.buf);
		fuse_reply_err(req, error_to_errno(rc));
		return;
	}
reply:
	fuse_reply_buf(req, d.buf, d.used);
	free(d.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct mountfs_statfs s;
	struct statvfs v;

	(void)ino;
	mountfs_statfs(ll_of(req)->fs, &s);
	memset(&v, 0, sizeof(v));
	v.f_bsize = s.bsize;
	v.f_frsize = s.bsize;
	v.f_blocks = s.blocks;
	v.f_files = s.files;
	v.f_namemax = s.namemax;
	v.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &v);
}

static void reply_xattr(fuse_req_t req, enum error_code rc, const char *buf, size_t size,
			size_t len)
{
	if (rc == ERR_NOT_FOUND)
		fuse_reply_err(req, ENODATA);
	else if (rc == ERR_RANGE)
		fuse_reply_err(req, ERANGE);
	else if (rc != ERR_OK)
		fuse_reply_err(req, error_to_errno(rc));
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else
		fuse_reply_buf(req, buf, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char buf[4096];
	size_t len = 0;
	enum error_code rc = mountfs_getxattr(ll_of(req)->fs, ino, name, buf,
					      size < sizeof(buf) ? size : sizeof(buf), &len);

	reply_xattr(req, rc, buf, size, len);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char buf[256];
	size_t len = 0;
	enum error_code rc = mountfs_listxattr(ll_of(req)->fs, ino, buf,
					       size < sizeof(buf) ? size : sizeof(buf), &len);

	reply_xattr(req, rc, buf, size, len);
}

/* Every modifying operation: the dataset is read-only. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)ino, (void)attr, (void)to_set, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino, (void)buf, (void)size, (void)off, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	fuse_reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	(void)ino, (void)mode, (void)offset, (void)length, (void)fi;
	fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
	.fallocate = op_fallocate,
};

/* Not in the kernel headers of this distribution yet (linux 6.9+). */
#define LL_NOTIFY_RESEND 7

/* First daemon: handle the kernel's INIT here, keeping a copy for a successor. */
static enum error_code first_init(struct fuse_session *se, const char *path, struct error *err)
{
	struct fuse_buf buf = { 0 };
	enum error_code rc;
	int n;

	do
		n = fuse_session_receive_buf(se, &buf);
	while (n == -EINTR);
	if (n <= 0) {
		free(buf.mem);
		return error_set(err, ERR_IO, "mount: no FUSE_INIT from the kernel (%s)",
				 n < 0 ? strerror(-n) : "connection closed");
	}
	rc = fileio_replace(path, buf.mem, (size_t)n, 0600, err);
	buf.size = (size_t)n;
	fuse_session_process_buf(se, &buf);
	free(buf.mem);
	return rc;
}

/* The first bytes of fuse_init_in every protocol 7 kernel sends: major,
 * minor, max_readahead, flags. */
#define LL_INIT_IN_MIN 16

enum error_code ll_check_saved_init(const void *data, size_t len, struct error *err)
{
	struct fuse_in_header h;
	uint32_t major;

	if (len > LL_INIT_STATE_MAX)
		return error_set(err, ERR_INVALID, "%zu bytes, more than a FUSE_INIT (at most %d)",
				 len, LL_INIT_STATE_MAX);
	if (len < sizeof(h) + LL_INIT_IN_MIN)
		return error_set(err, ERR_INVALID, "%zu bytes, less than a FUSE_INIT (at least %zu)",
				 len, sizeof(h) + LL_INIT_IN_MIN);
	memcpy(&h, data, sizeof(h));
	if (h.opcode != FUSE_INIT)
		return error_set(err, ERR_INVALID, "opcode %u, not FUSE_INIT (%d)", h.opcode,
				 FUSE_INIT);
	if (h.len != len)
		return error_set(err, ERR_INVALID,
				 "the header's length %u is not the %zu bytes saved (one request only)",
				 h.len, len);
	memcpy(&major, (const char *)data + sizeof(h), sizeof(major));
	if (major != FUSE_KERNEL_VERSION)
		return error_set(err, ERR_INVALID, "protocol major %u, not %d", major,
				 FUSE_KERNEL_VERSION);
	return ERR_OK;
}

/* Successor: replay the saved INIT, then have the kernel resend what the
 * previous daemon left unanswered (without that, such readers hang). */
static enum error_code take_over(struct fuse_session *se, const char *path, struct error *err)
{
	char init[LL_INIT_STATE_MAX + 1];
	struct fuse_buf buf = { 0 };
	struct fuse_out_header resend = { .len = sizeof(resend), .error = LL_NOTIFY_RESEND };
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return error_set(err, error_from_errno(errno),
				 "takeover: read the saved FUSE_INIT '%s': %s", path, strerror(errno));
	n = read(fd, init, sizeof(init));
	close(fd);
	if (n < 0)
		return error_set(err, error_from_errno(errno),
				 "takeover: read the saved FUSE_INIT '%s': %s", path, strerror(errno));
	if (ll_check_saved_init(init, (size_t)n, err) != ERR_OK)
		return error_wrap(err, "takeover: '%s' does not hold a FUSE_INIT request", path);
	buf.mem = init;
	buf.size = (size_t)n;
	/* The reply to this INIT goes back to the kernel, which no longer
	 * waits for it and drops it. */
	fuse_session_process_buf(se, &buf);
	if (write(fuse_session_fd(se), &resend, sizeof(resend)) != (ssize_t)sizeof(resend))
		log_warn("takeover: the kernel refused FUSE_NOTIFY_RESEND; requests of the previous daemon may hang",
			 LOG_S("cause", strerror(errno)));
	return ERR_OK;
}

/* Detaches a mount at path as an unprivileged user can: libfuse's
 * fusermount3 -u -z. Returns 0, or an errno. */
static int fusermount_detach(const char *path)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "--", path, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EPERM;
}

/*
 * A FUSE mount whose daemon died without unmounting (no holder of its
 * connection is left) answers every request with ENOTCONN. Mounting over
 * it would stack a live mount on a dead one; it is detached first
 * (lazily: its last users may still hold it), and said so. Several
 * stacked dead mounts are detached one by one. Asked with statfs, which
 * always makes a request: a stat may be answered from the attributes the
 * kernel keeps (attr_timeout).
 */
static enum error_code clear_dead_mount(const char *path, struct error *err)
{
	struct statfs st;

	for (int n = 0; n < 16 && statfs(path, &st) != 0 && errno == ENOTCONN; n++) {
		int e = umount2(path, MNT_DETACH) == 0 ? 0 : errno;

		if (e == EPERM)
			e = fusermount_detach(path);
		if (e != 0)
			return error_set(err, ERR_IO,
					 "mountpoint '%s' holds a dead FUSE mount (transport endpoint is not connected) that cannot be unmounted: %s; unmount it (umount -l or fusermount3 -u -z) and start again",
					 path, strerror(e));
		log_warn("a dead FUSE mount was at the mountpoint (transport endpoint is not connected): unmounted it lazily",
			 LOG_S("mountpoint", path));
	}
	return ERR_OK;
}

enum error_code ll_run(struct mountfs *fs, const struct ll_config *cfg, struct error *err)
{
	struct ll ll = { .fs = fs, .cfg = cfg };
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *loop = NULL;
	struct fuse_session *se = NULL;
	enum error_code rc = ERR_OK;
	char opts[512];
	unsigned idle = cfg->max_idle_threads;
	int cpus = cpu_available(), loop_rc;

	snprintf(opts, sizeof(opts), "ro,default_permissions,fsname=%s,subtype=granary,max_read=%u%s",
		 cfg->fsname, cfg->max_read, cfg->allow_other ? ",allow_other" : "");
	if (fuse_opt_add_arg(&args, "granary-fuse") != 0 || fuse_opt_add_arg(&args, "-o") != 0 ||
	    fuse_opt_add_arg(&args, opts) != 0 || (cfg->debug && fuse_opt_add_arg(&args, "-d") != 0)) {
		rc = error_set(err, ERR_NOMEM, "mount: out of memory");
		goto out;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), &ll);
	if (!se) {
		rc = error_set(err, ERR_INVALID, "mount '%s': libfuse refused the session options '%s'",
			       cfg->mountpoint, opts);
		goto out;
	}
	if (fuse_set_signal_handlers(se) != 0) {
		rc = error_set(err, ERR_INTERNAL, "mount '%s': cannot install signal handlers",
			       cfg->mountpoint);
		goto out;
	}
	if (strncmp(cfg->mountpoint, "/dev/fd/", 8) != 0 &&
	    (rc = clear_dead_mount(cfg->mountpoint, err)) != ERR_OK) {
		fuse_remove_signal_handlers(se);
		goto out;
	}
	if (fuse_session_mount(se, cfg->mountpoint) != 0) {
		rc = error_set(err, ERR_IO,
			       "mount '%s' failed (see the line above; is /dev/fuse there and the directory empty?)",
			       cfg->mountpoint);
		fuse_remove_signal_handlers(se);
		goto out;
	}
	/* The kernel sizes page-cache reads of the mount by its read-ahead
	 * (128 KiB by default), not by max_read: raise it so sequential reads
	 * arrive as max_read requests. A mount on /dev/fd/N was made by the
	 * node plugin, which sets it there (this process may not even see the
	 * mount point, in a mount pod). */
	if (cfg->read_ahead && strncmp(cfg->mountpoint, "/dev/fd/", 8) != 0) {
		struct error raerr;

		if (fusemount_set_read_ahead(cfg->mountpoint, cfg->read_ahead, &raerr) != ERR_OK)
			log_warn("cannot raise the mount's read-ahead", LOG_S("cause", raerr.msg));
	}
	if (cfg->takeover)
		rc = take_over(se, cfg->init_state, err);
	else if (cfg->init_state && *cfg->init_state)
		rc = first_init(se, cfg->init_state, err);
	if (rc != ERR_OK)
		goto unmount;
	/* Idle threads below the number of concurrent readers collapse
	 * throughput (MEASURED.md): keep plenty, they cost a stack each. */
	if (idle == 0)
		idle = (unsigned)(cpus * 8 > 16 ? cpus * 8 : 16);
	loop = fuse_loop_cfg_create();
	if (!loop) {
		rc = error_set(err, ERR_NOMEM, "mount: out of memory");
		goto unmount;
	}
	/* A cloned descriptor dies with its daemon, and the kernel fails the
	 * requests that were read through it: on a connection a supervisor
	 * holds for takeover (/dev/fd/N), every request must go through the
	 * shared descriptor so that FUSE_NOTIFY_RESEND can bring it back. */
	fuse_loop_cfg_set_clone_fd(loop, cfg->clone_fd && strncmp(cfg->mountpoint, "/dev/fd/", 8) != 0);
	fuse_loop_cfg_set_idle_threads(loop, idle);
	fuse_loop_cfg_set_max_threads(loop, idle * 2);
	/* A mount on /dev/fd/N is primed by whoever mounted it (the node
	 * plugin), which sees its path. */
	if (cfg->no_open && strncmp(cfg->mountpoint, "/dev/fd/", 8) != 0)
		fusemount_prime_async(cfg->mountpoint);
	log_info("mounted", LOG_S("mountpoint", cfg->mountpoint), LOG_S("fsname", cfg->fsname),
		 LOG_U("max_read", cfg->max_read), LOG_U("idle_threads", idle),
		 LOG_U("read_ahead", cfg->read_ahead));
	/* The loop returns the signal number after SIGTERM/SIGINT (a clean
	 * stop) and a negative errno when it failed. */
	loop_rc = fuse_session_loop_mt(se, loop);
	if (loop_rc < 0)
		rc = error_set(err, ERR_IO, "mount '%s': the session loop failed: %s",
			       cfg->mountpoint, strerror(-loop_rc));
unmount:
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	log_info("unmounted", LOG_S("mountpoint", cfg->mountpoint));
out:
	if (loop)
		fuse_loop_cfg_destroy(loop);
	if (se)
		fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return rc;
}
