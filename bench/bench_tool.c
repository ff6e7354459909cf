/*
 * bench_tool.c - granary-bench's command line (see bench_tool.h).
 *
 *   granary-bench smallgen DIR   [--files 20000] [--file_size 110KiB] [--dirs 100] [--list FILE]
 *   granary-bench smallread DIR  [--list FILE] [--threads 4] [--seed 1] [--limit 0]
 *   granary-bench accel DIR      [--accel all] [--readers 4] [--batches 20]
 *                                [--max_accelerators 1024] [--stop_below 0.9]
 *                                [--batch 0] [--batch_seconds 0]
 *   granary-bench metawalk DIR   [--passes 3]
 *   granary-bench proxy          --listen 127.0.0.1:P --upstream 127.0.0.1:Q --stats_listen 127.0.0.1:R
 *   granary-bench register NAME  --meta.address unix:///... --source s3://bucket/prefix/ [--block_size 0]
 */
#include "bench/bench_tool.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/daemon.h"
#include "common/retry.h"

static const struct config_field bench_fields[] = {
	{ "files", CONFIG_INT, offsetof(struct bench_settings, files), "20000",
	  "smallgen: number of files", 1, 1e8, NULL },
	{ "file_size", CONFIG_SIZE, offsetof(struct bench_settings, file_size), "110KiB",
	  "smallgen: mean file size (sizes vary +-50%; 0: empty files)", 0, 1 << 30, NULL },
	{ "dirs", CONFIG_INT, offsetof(struct bench_settings, dirs), "100",
	  "smallgen: class directories the files are spread over", 1, 1e6, NULL },
	{ "list", CONFIG_STRING, offsetof(struct bench_settings, list), "",
	  "smallgen: write the file list here; smallread: read it (else walk DIR)", 0, 0, NULL },
	{ "threads", CONFIG_INT, offsetof(struct bench_settings, threads), "4",
	  "smallread: parallel readers", 1, 1024, NULL },
	{ "seed", CONFIG_INT, offsetof(struct bench_settings, seed), "1",
	  "smallgen: contents; smallread: shuffle order", 0, 1e15, NULL },
	{ "limit", CONFIG_DURATION, offsetof(struct bench_settings, limit_ms), "0",
	  "smallread: stop taking new files after this long (0: whole epoch)", 0, 0, NULL },
	{ "read_size", CONFIG_SIZE, offsetof(struct bench_settings, read_size), "256KiB",
	  "smallread, accel: bytes per read(2)", 4096, 64 << 20, NULL },
	{ "readers", CONFIG_INT, offsetof(struct bench_settings, readers), "4",
	  "accel: shard reader threads feeding the record stream", 1, 1024, NULL },
	{ "accel", CONFIG_STRING, offsetof(struct bench_settings, accel), "all",
	  "accel: accelerator model, a100, h100, b200 or all (MLPerf Storage's ResNet-50)", 0, 0, NULL },
	{ "batch", CONFIG_INT, offsetof(struct bench_settings, batch), "0",
	  "accel: records per batch (0: the model's, 400)", 0, 1e6, NULL },
	{ "batch_seconds", CONFIG_DOUBLE, offsetof(struct bench_settings, batch_seconds), "0",
	  "accel: compute time of one batch (0: the model's)", 0, 100, NULL },
	{ "batches", CONFIG_INT, offsetof(struct bench_settings, batches), "20",
	  "accel: batches each accelerator computes per measurement", 2, 1e6, NULL },
	{ "max_accelerators", CONFIG_INT, offsetof(struct bench_settings, max_accelerators), "1024",
	  "accel: upper bound of the sweep (reported when reached)", 1, 4096, NULL },
	{ "stop_below", CONFIG_DOUBLE, offsetof(struct bench_settings, stop_below), "0.9",
	  "accel: the utilisation bar: the largest count at or above it is the result", 0, 1, NULL },
	{ "passes", CONFIG_INT, offsetof(struct bench_settings, passes), "3",
	  "metawalk: timed stat passes after the first", 1, 1000, NULL },
	{ "listen", CONFIG_STRING, offsetof(struct bench_settings, listen), "",
	  "proxy: address clients connect to (host:port)", 0, 0, NULL },
	{ "upstream", CONFIG_STRING, offsetof(struct bench_settings, upstream), "",
	  "proxy: the S3 server (host:port)", 0, 0, NULL },
	{ "stats_listen", CONFIG_STRING, offsetof(struct bench_settings, stats_listen), "",
	  "proxy: a connection here gets the counters as one line (host:port)", 0, 0, NULL },
	{ "delay", CONFIG_DURATION, offsetof(struct bench_settings, delay_ms), "0s",
	  "proxy: how long each request waits before it goes on to the server (a far store's round trip)",
	  0, 10000, NULL },
	{ "meta.address", CONFIG_STRING, offsetof(struct bench_settings, meta_address),
	  "unix:///run/granary/meta.sock", "register: granary-meta address", 0, 0, NULL },
	{ "meta.key_file", CONFIG_STRING, offsetof(struct bench_settings, meta_key_file), "",
	  "register: key of granary-meta's csi role (empty: unsigned calls)", 0, 0, NULL },
	TLS_CLIENT_FIELDS(struct bench_settings, meta_tls, "meta.tls.", "granary-meta (register)"),
	{ "source", CONFIG_STRING, offsetof(struct bench_settings, source), "",
	  "register: source URI, s3://bucket/prefix/", 0, 0, NULL },
	{ "block_size", CONFIG_SIZE, offsetof(struct bench_settings, block_size), "0",
	  "register: the dataset's block size (0: the workers' default)", 0, 64 << 20, NULL },
	{ "log.level", CONFIG_STRING, offsetof(struct bench_settings, log_level), "warn",
	  "debug, info, warn or error", 0, 0, NULL },
};

static const struct config_schema bench_schema = {
	.program = "granary-bench",
	.summary = "readers and helpers of bench/compare.sh: smallgen DIR | smallread DIR | "
		   "accel DIR | metawalk DIR | proxy | register NAME | resident DIR",
	.fields = bench_fields,
	.nfields = sizeof(bench_fields) / sizeof(bench_fields[0]),
};

double bench_now(void)
{
	return retry_now_s();
}

int main(int argc, char **argv)
{
	struct bench_settings set;
	int first = argc, rc, npos;
	const char *cmd, *arg;

	rc = daemon_start(&bench_schema, &set, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 2;
	npos = argc - first;
	cmd = npos > 0 ? argv[first] : "";
	arg = npos > 1 ? argv[first + 1] : NULL;
	if (strcmp(cmd, "proxy") == 0 && npos == 1)
		rc = bench_proxy(&set);
	else if (npos != 2)
		fprintf(stderr, "granary-bench: usage: smallgen DIR | smallread DIR | accel DIR | "
				"metawalk DIR | proxy | register NAME | resident DIR (see --help)\n");
	else if (strcmp(cmd, "smallgen") == 0)
		rc = bench_smallgen(&set, arg);
	else if (strcmp(cmd, "smallread") == 0)
		rc = bench_smallread(&set, arg);
	else if (strcmp(cmd, "accel") == 0)
		rc = bench_accel(&set, arg);
	else if (strcmp(cmd, "metawalk") == 0)
		rc = bench_metawalk(&set, arg);
	else if (strcmp(cmd, "register") == 0)
		rc = bench_register(&set, arg);
	else if (strcmp(cmd, "resident") == 0)
		rc = bench_resident(&set, arg);
	else
		fprintf(stderr, "granary-bench: unknown command '%s'\n", cmd);
	config_release(&bench_schema, &set);
	return rc;
}
