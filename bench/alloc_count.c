/*
 * alloc_count.c - an LD_PRELOAD library that counts a process's heap
 * allocations, for bench/readpath.sh.
 *
 *   LD_PRELOAD=libgranary_alloc_count.so GRANARY_ALLOC_COUNT=FILE cmd ...
 *
 * Every malloc, calloc, realloc, aligned_alloc, posix_memalign, memalign
 * and valloc of the process (libc's own callers and its libraries' included)
 * adds one to a 64-bit counter kept in FILE (8 bytes, created, mapped
 * shared), so a script reads it at any moment, before and after a fixed
 * read, without stopping the process: `od -An -t u8 FILE`. The allocations
 * themselves are glibc's (__libc_malloc ...), unchanged. Without
 * GRANARY_ALLOC_COUNT nothing is counted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic uint64_t *counter;

__attribute__((constructor)) static void alloc_count_init(void)
{
	const char *path = getenv("GRANARY_ALLOC_COUNT");
	void *p;
	int fd;

	if (!path || !*path)
		return;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (ftruncate(fd, sizeof(uint64_t)) == 0) {
		p = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED)
			counter = p;
	}
	close(fd);
}

static inline void count(void)
{
	if (counter)
		atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
	count();
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	count();
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	count();
	return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n)
{
	count();
	return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	count();
	return __libc_memalign(align, n);
}

void *valloc(size_t n)
{
	count();
	return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	void *p;

	if (align < sizeof(void *) || (align & (align - 1)) != 0)
		return EINVAL;
	count();
	p = __libc_memalign(align, n);
	if (!p && n)
		return ENOMEM;
	*out = p;
	return 0;
}
