/*
 * config.h - YAML configuration with command-line overrides.
 *
 * Each daemon describes its settings once, as a table of struct config_field
 * (dotted key, type, offset into the daemon's own settings struct, default,
 * help). From that one table:
 *   - config_apply_defaults() fills the struct with the tuned defaults;
 *   - config_load_file() reads a YAML file whose nested mappings spell the
 *     dotted keys ("store: {endpoint: ...}" sets "store.endpoint");
 *   - config_parse_args() loads --config FILE first, then applies every
 *     "--key VALUE" / "--key=VALUE" flag on top, so every field of the file
 *     can be overridden by a flag of the same dotted name;
 *   - config_usage() prints the flags with types, defaults and help.
 *
 * Bad input is refused with what is wrong and where: an unknown key, a value
 * of the wrong type or out of range, a duplicate key, malformed YAML, or
 * YAML nested more than CONFIG_MAX_DEPTH levels gives ERR_INVALID with
 * "FILE:LINE: key 'a.b': ..." (or "flag '--a.b': ...").
 *
 * Strings are heap copies owned by the struct; config_release() frees them.
 * Not thread-safe: configure before starting threads.
 */
#ifndef GRANARY_COMMON_CONFIG_H
#define GRANARY_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

/* Deepest nesting of mappings and sequences a file may have: every schema
 * is a few levels deep, and a deeper file is refused before it is loaded. */
#define CONFIG_MAX_DEPTH 32

enum config_type {
	CONFIG_STRING,   /* char *; "" and null allowed */
	CONFIG_BOOL,     /* bool; true/false/yes/no/on/off/1/0, any case */
	CONFIG_INT,      /* int64_t; decimal, within [min, max] */
	CONFIG_SIZE,     /* uint64_t bytes; 4096, "4MiB", "10GiB", "1.5GB", "64k" */
	CONFIG_DURATION, /* uint64_t milliseconds; "250ms", "30s", "5m", "1h"; bare number = seconds */
	CONFIG_DOUBLE,   /* double, within [min, max] */
	CONFIG_ENUM,     /* int index into choices (NULL-terminated) */
};

struct config_field {
	const char *key;      /* dotted path: "store.endpoint" */
	enum config_type type;
	size_t offset;        /* offsetof(settings struct, member) */
	const char *def;      /* default in the same text form a file uses; NULL = zero/empty */
	const char *help;     /* one line for --help */
	double min, max;      /* INT, DOUBLE, SIZE, DURATION bounds; both 0 = unbounded */
	const char *const *choices; /* ENUM only */
};

struct config_schema {
	const char *program;  /* "granary-worker" */
	const char *summary;  /* one line under the usage line */
	const struct config_field *fields;
	size_t nfields;
};

/* Fills every field of obj with its default. obj may be uninitialised: the
 * string slots are overwritten, not freed (call config_release() before
 * applying defaults a second time). Returns ERR_INVALID if a default itself
 * does not parse (a bug in the table; message names it); obj is then left
 * with NULL strings, safe for config_release(). */
enum error_code config_apply_defaults(const struct config_schema *schema,
				      void *obj, struct error *err);

/* Loads YAML from path into obj; only keys present in the file change.
 * If it cannot be read: error_from_errno()'s code (ERR_NOT_FOUND,
 * ERR_PERMISSION ...) with the path; ERR_INVALID for bad content. On error, keys before the bad one may
 * already be applied; obj stays valid for config_release(). */
enum error_code config_load_file(const struct config_schema *schema, void *obj,
				 const char *path, struct error *err);

/* Same, from a string; name is used in messages in place of a file name. */
enum error_code config_load_string(const struct config_schema *schema,
				   void *obj, const char *name,
				   const char *yaml, struct error *err);

/* Sets one field from its text form (value NULL = YAML null). where
 * (e.g. "file.yaml:12", may be NULL) prefixes messages: "WHERE: key 'K':
 * ...". On error the field keeps its old value. */
enum error_code config_set(const struct config_schema *schema, void *obj,
			   const char *key, const char *value,
			   const char *where, struct error *err);

enum config_args_result {
	CONFIG_ARGS_RUN = 0, /* proceed; *first_positional indexes leftovers */
	CONFIG_ARGS_HELP,    /* --help / -h given: usage printed to stdout */
	CONFIG_ARGS_VERSION, /* --version / -V given: version printed to stdout */
	CONFIG_ARGS_ERROR,   /* err says what is wrong */
};

/*
 * Applies defaults, then --config FILE (if given anywhere in argv), then
 * every flag in argv order. Arguments that do not start with "--" are left
 * as positionals; "--" ends flag parsing. *first_positional receives the
 * index of the first positional (argc if none) after argv is permuted so
 * that positionals come last. version is printed for --version.
 *
 * A flag's value is "--key=VALUE" or the next argument, unless that starts
 * with "--" (then the value is missing). A BOOL flag takes the next
 * argument only if it reads as a bool, else means true. --help/--version
 * win wherever they stand (before "--"). In every outcome obj holds
 * defaults or better and must be given to config_release().
 */
enum config_args_result config_parse_args(const struct config_schema *schema,
					  void *obj, int argc, char **argv,
					  const char *version,
					  int *first_positional,
					  struct error *err);

/* Writes usage: one line per flag with type, default and help. */
void config_usage(const struct config_schema *schema, FILE *out);

/* Frees the strings config_* allocated in obj. */
void config_release(const struct config_schema *schema, void *obj);

/*
 * Checks shared by the daemons' settings, for what a field table cannot
 * say. Each returns ERR_OK or ERR_INVALID with "key 'KEY': ..." in err.
 */
enum error_code config_check_abs_path(const char *key, const char *path,
				      struct error *err);
/* A node or host name: at most 253 of letters, digits, '.', '-', '_'. */
enum error_code config_check_node_name(const char *key, const char *name,
				       struct error *err);
/* The level names common/log.h accepts. */
enum error_code config_check_log_level(const char *key, const char *level,
				       struct error *err);

/*
 * Splits a comma-separated list of absolute directories (the value of key)
 * into dirs[0..*n), at most max, each a heap copy without blanks around it
 * or a trailing '/' ("/" stays "/"); empty entries are skipped, so "" gives
 * *n 0. ERR_INVALID naming the key for a relative entry or more than max
 * ("key 'allowed_roots': 'data' is not an absolute path"); ERR_NOMEM. On
 * error nothing is left to free. Free with config_dirs_free.
 */
enum error_code config_split_dirs(const char *key, const char *list, char **dirs, size_t max,
				  size_t *n, struct error *err);
void config_dirs_free(char **dirs, size_t n);

/* Parsers shared with other modules, same rules as the file format.
 * ERR_INVALID for malformed text, ERR_RANGE if it exceeds 64 bits. */
enum error_code config_parse_size(const char *text, uint64_t *out);
enum error_code config_parse_duration_ms(const char *text, uint64_t *out);
enum error_code config_parse_bool(const char *text, bool *out);

#endif
