/*
 * daemon.c - shared start-up of the Granary binaries.
 */
#include "common/daemon.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/version.h"

/* The one piece of process-wide mutable state: set by the signal handler. */
static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

void daemon_handle_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

int daemon_stopping(void)
{
	return stop_requested != 0;
}

void daemon_report(const struct config_schema *schema, const struct error *err)
{
	fprintf(stderr, "%s: %s\n", schema->program, err->msg);
}

int daemon_refuse(const struct config_schema *schema, void *settings, const struct error *err)
{
	daemon_report(schema, err);
	config_release(schema, settings);
	return 2;
}

int daemon_start(const struct config_schema *schema, void *settings, int argc,
		 char **argv, int *first_positional)
{
	struct error err;
	int first = argc;

	switch (config_parse_args(schema, settings, argc, argv, GRANARY_VERSION, &first, &err)) {
	case CONFIG_ARGS_HELP:
	case CONFIG_ARGS_VERSION:
		config_release(schema, settings);
		return 0;
	case CONFIG_ARGS_ERROR:
		return daemon_refuse(schema, settings, &err);
	case CONFIG_ARGS_RUN:
		break;
	}
	if (first_positional) {
		*first_positional = first;
	} else if (first < argc) {
		error_set(&err, ERR_INVALID,
			  "unexpected argument '%s' (settings are flags, see --help)", argv[first]);
		return daemon_refuse(schema, settings, &err);
	}
	for (size_t i = 0; i < schema->nfields; i++) {
		const struct config_field *f = &schema->fields[i];
		const char *name;
		int level;

		if (strcmp(f->key, "log.level") != 0 || f->type != CONFIG_STRING)
			continue;
		name = *(char **)((char *)settings + f->offset);
		level = log_level_parse(name);
		if (level < 0) {
			error_set(&err, ERR_INVALID,
				  "key 'log.level': '%s' is not debug, info, warn or error", name);
			return daemon_refuse(schema, settings, &err);
		}
		log_set_level((enum log_level)level);
	}
	return -1;
}
