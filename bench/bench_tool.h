/*
 * bench_tool.h - granary-bench, the readers and helpers of the side-by-side
 * benchmark (bench/compare.sh). One binary, one command per job:
 *
 *   smallgen DIR   a tree of small files like ImageNet's JPEGs
 *   smallread DIR  shuffled small-file epoch: N threads open/read/close
 *   accel DIR      accelerator emulation over a TFRecord record stream
 *   metawalk DIR   listing rate and stat(2) rate over every entry
 *   proxy          a TCP forwarder in front of S3 that counts requests/bytes
 *   register NAME  registers a dataset in granary-meta and waits until ready
 *   resident DIR   bytes of the files under DIR that the page cache holds
 *
 * Each command prints one key=value line per result, for the script.
 */
#ifndef GRANARY_BENCH_BENCH_TOOL_H
#define GRANARY_BENCH_BENCH_TOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/tls.h"

struct bench_settings {
	/* smallgen / smallread */
	int64_t files;
	uint64_t file_size;
	int64_t dirs;
	char *list;
	int64_t threads;
	int64_t seed;
	uint64_t limit_ms;
	uint64_t read_size;
	/* accel */
	char *accel;
	int64_t readers;
	int64_t batch;
	double batch_seconds;
	int64_t batches;
	int64_t max_accelerators;
	double stop_below;
	/* metawalk */
	int64_t passes;
	/* proxy */
	char *listen;
	char *upstream;
	char *stats_listen;
	uint64_t delay_ms;
	/* register */
	char *meta_address;
	char *meta_key_file;
	struct tls_client_settings meta_tls;
	char *source;
	uint64_t block_size;
	char *log_level;
};

/* Each returns the process exit status (0 ok, 1 failure, 2 usage). */
int bench_smallgen(const struct bench_settings *s, const char *dir);
int bench_smallread(const struct bench_settings *s, const char *dir);
int bench_accel(const struct bench_settings *s, const char *dir);
int bench_metawalk(const struct bench_settings *s, const char *dir);
int bench_proxy(const struct bench_settings *s);
int bench_register(const struct bench_settings *s, const char *name);
int bench_resident(const struct bench_settings *s, const char *dir);

/* Monotonic clock in seconds. */
double bench_now(void);

#endif
