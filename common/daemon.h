/*
 * daemon.h - the start-up every Granary binary shares: flags and YAML
 * through config_parse_args, --help/--version, the log level, the
 * refusal of arguments a daemon does not take, one form for configuration
 * errors, and SIGTERM / SIGINT turned into a flag that the main loop polls.
 *
 * A daemon's main begins:
 *
 *	rc = daemon_start(schema, &s, argc, argv, NULL);
 *	if (rc >= 0)
 *		return rc;
 *	if (NAME_settings_check(&s, &err) != ERR_OK)
 *		return daemon_refuse(schema, &s, &err);
 *	daemon_handle_signals();
 */
#ifndef GRANARY_COMMON_DAEMON_H
#define GRANARY_COMMON_DAEMON_H

#include <signal.h>

#include "common/config.h"

/*
 * Parses argv into settings (see config_parse_args) and applies the level
 * of the string field "log.level" if the schema has one. With
 * first_positional NULL the program takes no positional arguments and one
 * is a usage error; else *first_positional indexes them. Returns -1 to go
 * on, or the exit status to return from main at once, settings released:
 * 0 after --help or --version, 2 after a usage or configuration error
 * (printed to stderr as "PROGRAM: message").
 */
int daemon_start(const struct config_schema *schema, void *settings, int argc,
		 char **argv, int *first_positional);

/* Prints err to stderr as "PROGRAM: message", the form of every
 * configuration and start-up error a binary reports before it logs. */
void daemon_report(const struct config_schema *schema, const struct error *err);

/* For settings found wrong after daemon_start: daemon_report, then
 * releases settings; returns 2, the exit status for main to return. */
int daemon_refuse(const struct config_schema *schema, void *settings, const struct error *err);

/* Installs SIGTERM/SIGINT handlers that set the flag daemon_stopping()
 * reads, and ignores SIGPIPE. */
void daemon_handle_signals(void);

/* True once SIGTERM or SIGINT arrived. */
int daemon_stopping(void);

#endif
