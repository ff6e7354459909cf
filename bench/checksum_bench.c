/*
 * checksum_bench.c - the candidate block checksums over in-memory data:
 * XXH3-64 (libxxhash) and CRC32C (ISA-L crc32_iscsi), one chunk at a time
 * as the read path checks them (docs/cache-layout.md), single-threaded.
 *
 *   checksum_bench [MiB] [chunk KiB]     defaults: 256 MiB, 64 KiB chunks
 *
 * Prints GB/s and CPU seconds per GB of each, and the memcpy rate of the
 * same buffer for scale (a warm read copies every byte at least once).
 */
#include <isa-l/crc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile uint64_t sink;

static void run_xxh3(const unsigned char *buf, size_t len, size_t chunk)
{
	for (size_t off = 0; off < len; off += chunk)
		sink += XXH3_64bits(buf + off, chunk);
}

static void run_crc32c(const unsigned char *buf, size_t len, size_t chunk)
{
	for (size_t off = 0; off < len; off += chunk)
		sink += crc32_iscsi((unsigned char *)buf + off, (int)chunk, 0);
}

static unsigned char *copy_dst;

static void run_memcpy(const unsigned char *buf, size_t len, size_t chunk)
{
	for (size_t off = 0; off < len; off += chunk)
		memcpy(copy_dst + off, buf + off, chunk);
}

/* Best of 5 passes: GB/s; *cpu_per_gb the CPU seconds per GB of that pass. */
static double measure(void (*fn)(const unsigned char *, size_t, size_t),
		      const unsigned char *buf, size_t len, size_t chunk, double *cpu_per_gb)
{
	double best = 0;

	fn(buf, len, chunk); /* warm up */
	for (int i = 0; i < 5; i++) {
		double t0 = cpu_s(), dt;

		fn(buf, len, chunk);
		dt = cpu_s() - t0;
		if (dt > 0 && (double)len / 1e9 / dt > best) {
			best = (double)len / 1e9 / dt;
			*cpu_per_gb = dt / ((double)len / 1e9);
		}
	}
	return best;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
	size_t chunk = (argc > 2 ? strtoul(argv[2], NULL, 10) : 64) << 10;
	size_t len = mib << 20;
	unsigned char *buf;
	double cpu_x = 0, cpu_c = 0, cpu_m = 0, x, c, m;

	if (mib == 0 || chunk == 0 || len % chunk != 0) {
		fprintf(stderr, "usage: checksum_bench [MiB] [chunk KiB dividing it]\n");
		return 2;
	}
	buf = malloc(len);
	copy_dst = malloc(len);
	if (!buf || !copy_dst) {
		fprintf(stderr, "checksum_bench: out of memory for %zu MiB\n", mib);
		return 1;
	}
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)(i * 2654435761u >> 13);
	memset(copy_dst, 0, len);
	x = measure(run_xxh3, buf, len, chunk, &cpu_x);
	c = measure(run_crc32c, buf, len, chunk, &cpu_c);
	m = measure(run_memcpy, buf, len, chunk, &cpu_m);
	printf("checksum over %zu MiB in %zu KiB chunks, one thread, best of 5\n", mib, chunk >> 10);
	printf("%-8s %8.2f GB/s %8.4f CPU s/GB\n", "xxh3-64", x, cpu_x);
	printf("%-8s %8.2f GB/s %8.4f CPU s/GB\n", "crc32c", c, cpu_c);
	printf("%-8s %8.2f GB/s %8.4f CPU s/GB\n", "memcpy", m, cpu_m);
	printf("xxh3/crc32c speed ratio %.2f\n", c > 0 ? x / c : 0);
	free(buf);
	free(copy_dst);
	return 0;
}
