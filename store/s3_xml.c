/*
 * s3_xml.c - ListObjectsV2 and <Error> bodies to C structs, via libexpat.
 *
 * The parser is namespace-aware (XML_ParserCreateNS) so that element names
 * arrive as "URI<sep>local" when AWS sends its xmlns and as "local" when a
 * compatible service omits it; we compare local names only. Elements are
 * mapped to tags on a small stack, and character data is captured only for
 * the leaves we keep.
 */
#include "store/s3_xml.h"

#include <expat.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/array.h"
#include "common/fileio.h"

/* Not a character that can occur in a namespace URI or an element name. */
#define NS_SEP '\x01'

/* Deeper elements are still tracked by depth but never captured. */
#define STACK_MAX 16

/* Bounds one XML_Parse call, whose length is an int. */
#define CHUNK_MAX (1 << 30)

enum tag {
	TAG_OTHER = 0,
	TAG_LIST_BUCKET_RESULT,
	TAG_CONTENTS,
	TAG_KEY,
	TAG_SIZE,
	TAG_ETAG,
	TAG_LAST_MODIFIED,
	TAG_COMMON_PREFIXES,
	TAG_PREFIX,
	TAG_IS_TRUNCATED,
	TAG_NEXT_CONTINUATION_TOKEN,
	TAG_ENCODING_TYPE,
	TAG_ERROR,
	TAG_CODE,
	TAG_MESSAGE,
};

static const struct {
	const char *name;
	enum tag tag;
} tag_names[] = {
	{ "ListBucketResult", TAG_LIST_BUCKET_RESULT },
	{ "Contents", TAG_CONTENTS },
	{ "Key", TAG_KEY },
	{ "Size", TAG_SIZE },
	{ "ETag", TAG_ETAG },
	{ "LastModified", TAG_LAST_MODIFIED },
	{ "CommonPrefixes", TAG_COMMON_PREFIXES },
	{ "Prefix", TAG_PREFIX },
	{ "IsTruncated", TAG_IS_TRUNCATED },
	{ "NextContinuationToken", TAG_NEXT_CONTINUATION_TOKEN },
	{ "EncodingType", TAG_ENCODING_TYPE },
	{ "Error", TAG_ERROR },
	{ "Code", TAG_CODE },
	{ "Message", TAG_MESSAGE },
};

/* Growable character buffer for one leaf's text, which expat may split. */
struct text {
	char *buf;
	size_t len;
	size_t cap;
};

struct parser {
	XML_Parser xp;
	struct error *err;
	enum error_code rc;     /* first error raised by a handler */
	int depth;              /* current element depth, root = 1 */
	enum tag stack[STACK_MAX + 1];
	int capturing;          /* inside a leaf whose text we keep */
	struct text text;
	enum tag root;          /* the document element */

	/* ListBucketResult */
	struct store_list_page *page;
	size_t objects_cap;
	size_t prefixes_cap;
	int have_key;           /* of the current Contents */
	int have_size;
	int truncated;
	int url_encoded;

	/* Error */
	char *code;
	size_t code_size;
	char *message;
	size_t message_size;
};

static enum tag tag_of(const char *name)
{
	const char *local = strrchr(name, NS_SEP);

	local = local ? local + 1 : name;
	for (size_t i = 0; i < sizeof(tag_names) / sizeof(tag_names[0]); i++)
		if (strcmp(local, tag_names[i].name) == 0)
			return tag_names[i].tag;
	return TAG_OTHER;
}

static void parser_fail(struct parser *p, enum error_code code,
			const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records the first error and stops expat; later handlers see rc set. */
static void parser_fail(struct parser *p, enum error_code code,
			const char *fmt, ...)
{
	va_list ap;

	if (p->rc != ERR_OK)
		return;
	va_start(ap, fmt);
	p->rc = error_setv(p->err, code, fmt, ap);
	va_end(ap);
	XML_StopParser(p->xp, XML_FALSE);
}

static int text_append(struct text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 64;
		char *nb = NULL;

		while (cap < t->len + n + 1)
			cap *= 2;
		nb = realloc(t->buf, cap);
		if (!nb)
			return -1;
		t->buf = nb;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	t->buf[t->len] = '\0';
	return 0;
}

/* Leaf values other than keys may be pretty-printed; keys are kept as is. */
static char *text_trimmed(struct text *t)
{
	char *s = t->buf;
	size_t n = t->len;

	while (n > 0 && strchr(" \t\r\n", s[n - 1]))
		s[--n] = '\0';
	while (*s && strchr(" \t\r\n", *s))
		s++;
	return s;
}

/* The tag of the element `up` levels above the current one, root = depth 1. */
static enum tag parent(const struct parser *p, int up)
{
	int d = p->depth - up;

	if (d < 1 || d > STACK_MAX)
		return TAG_OTHER;
	return p->stack[d];
}

/* Which leaves of a ListBucketResult we keep, by their position. */
static int list_wants_text(const struct parser *p, enum tag t)
{
	if (p->depth == 2)
		return t == TAG_IS_TRUNCATED || t == TAG_NEXT_CONTINUATION_TOKEN ||
		       t == TAG_ENCODING_TYPE;
	if (p->depth == 3 && parent(p, 1) == TAG_CONTENTS)
		return t == TAG_KEY || t == TAG_SIZE || t == TAG_ETAG ||
		       t == TAG_LAST_MODIFIED;
	if (p->depth == 3 && parent(p, 1) == TAG_COMMON_PREFIXES)
		return t == TAG_PREFIX;
	return 0;
}

static void XMLCALL list_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct parser *p = ud;
	struct store_list_page *pg = p->page;
	enum tag t = tag_of(name);

	if (p->rc != ERR_OK)
		return;
	p->depth++;
	if (p->depth <= STACK_MAX)
		p->stack[p->depth] = t;
	p->capturing = 0;
	if (p->depth == 1) {
		p->root = t;
		if (t != TAG_LIST_BUCKET_RESULT)
			parser_fail(p, ERR_INVALID,
				    "list answer: root element is not ListBucketResult");
		return;
	}
	if (p->depth == 2 && t == TAG_CONTENTS) {
		if (array_grow((void **)&pg->objects, &p->objects_cap, pg->nobjects + 1,
			 sizeof(*pg->objects)) < 0) {
			parser_fail(p, ERR_NOMEM, "list answer: out of memory");
			return;
		}
		memset(&pg->objects[pg->nobjects], 0, sizeof(*pg->objects));
		pg->nobjects++;
		p->have_key = 0;
		p->have_size = 0;
		return;
	}
	if (list_wants_text(p, t)) {
		p->capturing = 1;
		p->text.len = 0;
		if (text_append(&p->text, "", 0) < 0)
			parser_fail(p, ERR_NOMEM, "list answer: out of memory");
	}
}

static int parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* Handles the end of a captured leaf of ListBucketResult. */
static void list_leaf(struct parser *p, enum tag t)
{
	struct store_list_page *pg = p->page;
	struct store_object *obj = pg->nobjects ? &pg->objects[pg->nobjects - 1] : NULL;
	char *v = NULL;
	size_t n = 0;

	switch (t) {
	case TAG_KEY:
		free(obj->key);
		obj->key = strdup(p->text.buf);
		if (!obj->key)
			goto nomem;
		p->have_key = 1;
		break;
	case TAG_SIZE:
		v = text_trimmed(&p->text);
		if (parse_size(v, &obj->size) < 0) {
			parser_fail(p, ERR_INVALID,
				    "list answer: line %lu: Size is not a number",
				    (unsigned long)XML_GetCurrentLineNumber(p->xp));
			return;
		}
		p->have_size = 1;
		break;
	case TAG_ETAG:
		v = text_trimmed(&p->text);
		n = strlen(v);
		if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
			v++;
			n -= 2;
		}
		/* A truncated ETag would make every If-Match fail later. */
		if (n >= sizeof(obj->etag)) {
			parser_fail(p, ERR_INVALID,
				    "list answer: line %lu: ETag longer than %zu bytes",
				    (unsigned long)XML_GetCurrentLineNumber(p->xp),
				    sizeof(obj->etag) - 1);
			return;
		}
		memcpy(obj->etag, v, n);
		obj->etag[n] = '\0';
		break;
	case TAG_LAST_MODIFIED: {
		long long ts = s3_xml_parse_time(text_trimmed(&p->text));

		if (ts == -1) {
			parser_fail(p, ERR_INVALID,
				    "list answer: line %lu: malformed LastModified",
				    (unsigned long)XML_GetCurrentLineNumber(p->xp));
			return;
		}
		obj->mtime = ts;
		break;
	}
	case TAG_PREFIX:
		if (array_grow((void **)&pg->prefixes, &p->prefixes_cap, pg->nprefixes + 1,
			 sizeof(*pg->prefixes)) < 0)
			goto nomem;
		pg->prefixes[pg->nprefixes] = strdup(p->text.buf);
		if (!pg->prefixes[pg->nprefixes])
			goto nomem;
		pg->nprefixes++;
		break;
	case TAG_IS_TRUNCATED:
		v = text_trimmed(&p->text);
		if (strcmp(v, "true") == 0) {
			p->truncated = 1;
		} else if (strcmp(v, "false") == 0) {
			p->truncated = 0;
		} else {
			parser_fail(p, ERR_INVALID,
				    "list answer: line %lu: IsTruncated is not true or false",
				    (unsigned long)XML_GetCurrentLineNumber(p->xp));
			return;
		}
		break;
	case TAG_NEXT_CONTINUATION_TOKEN:
		free(pg->next_token);
		pg->next_token = strdup(p->text.buf);
		if (!pg->next_token)
			goto nomem;
		break;
	case TAG_ENCODING_TYPE:
		v = text_trimmed(&p->text);
		/* Some servers echo an empty element when they did not encode. */
		if (*v == '\0')
			break;
		if (strcmp(v, "url") != 0) {
			parser_fail(p, ERR_UNSUPPORTED,
				    "list answer: unknown EncodingType '%.64s'", v);
			return;
		}
		p->url_encoded = 1;
		break;
	default:
		break;
	}
	return;
nomem:
	parser_fail(p, ERR_NOMEM, "list answer: out of memory");
}

static void XMLCALL list_end(void *ud, const XML_Char *name)
{
	struct parser *p = ud;
	enum tag t = TAG_OTHER;

	if (p->rc != ERR_OK)
		return;
	t = p->depth <= STACK_MAX ? p->stack[p->depth] : TAG_OTHER;
	if (p->capturing) {
		p->capturing = 0;
		list_leaf(p, t);
	} else if (p->depth == 2 && t == TAG_CONTENTS) {
		if (!p->have_key || !p->have_size)
			parser_fail(p, ERR_INVALID,
				    "list answer: line %lu: Contents without %s",
				    (unsigned long)XML_GetCurrentLineNumber(p->xp),
				    p->have_key ? "Size" : "Key");
	}
	p->depth--;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct parser *p = ud;

	if (p->rc != ERR_OK || !p->capturing)
		return;
	if (text_append(&p->text, s, (size_t)len) < 0)
		parser_fail(p, ERR_NOMEM, "xml answer: out of memory");
}

/*
 * S3 never sends a DTD; refusing one keeps entity expansion tricks (and
 * external entities) out of reach whatever the expat version.
 */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
			       const XML_Char *pubid, int has_internal_subset)
{
	parser_fail(ud, ERR_INVALID, "xml answer: document type declarations are not allowed");
}

/*
 * Decodes in place. S3 (and MinIO) form-encode with encoding-type=url: a
 * space is '+' and a literal '+' is "%2B", so '+' decodes to a space.
 * Returns -1 on a malformed escape or an encoded NUL.
 */
static int url_decode(char *s)
{
	char *w = s;

	for (const char *r = s; *r; r++) {
		if (*r == '+') {
			*w++ = ' ';
		} else if (*r == '%') {
			int hi = fileio_hex_value(r[1]);
			int lo = hi < 0 ? -1 : fileio_hex_value(r[2]);

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			*w++ = (char)(hi << 4 | lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return 0;
}

/* Feeds body to expat; a handler error wins over expat's own. */
static enum error_code parser_run(struct parser *p, const char *body, size_t len,
				  const char *what)
{
	size_t off = 0;

	do {
		size_t n = len - off > CHUNK_MAX ? CHUNK_MAX : len - off;
		int final = off + n == len;

		if (XML_Parse(p->xp, body + off, (int)n, final) != XML_STATUS_OK) {
			if (p->rc != ERR_OK)
				return p->rc;
			return error_set(p->err, ERR_INVALID, "%s: malformed xml at line %lu: %s",
					 what, (unsigned long)XML_GetCurrentLineNumber(p->xp),
					 XML_ErrorString(XML_GetErrorCode(p->xp)));
		}
		off += n;
	} while (off < len);
	return p->rc;
}

enum error_code s3_xml_parse_list(const char *body, size_t len,
				  struct store_list_page *page, struct error *err)
{
	struct parser p = { .err = err, .page = page };
	enum error_code rc = ERR_OK;

	memset(page, 0, sizeof(*page));
	p.xp = XML_ParserCreateNS(NULL, NS_SEP);
	if (!p.xp)
		return error_set(err, ERR_NOMEM, "list answer: cannot create xml parser");
	XML_SetUserData(p.xp, &p);
	XML_SetElementHandler(p.xp, list_start, list_end);
	XML_SetCharacterDataHandler(p.xp, on_text);
	XML_SetStartDoctypeDeclHandler(p.xp, on_doctype);

	rc = parser_run(&p, body, len, "list answer");
	if (rc != ERR_OK)
		goto fail;

	if (!p.truncated) {
		free(page->next_token);
		page->next_token = NULL;
	} else if (!page->next_token) {
		rc = error_set(err, ERR_INVALID,
			       "list answer: IsTruncated without NextContinuationToken");
		goto fail;
	}

	/* EncodingType may follow the Contents it applies to, so decode last. */
	if (p.url_encoded) {
		for (size_t i = 0; i < page->nobjects; i++) {
			if (url_decode(page->objects[i].key) < 0) {
				rc = error_set(err, ERR_INVALID,
					       "list answer: malformed url-encoded Key");
				goto fail;
			}
		}
		for (size_t i = 0; i < page->nprefixes; i++) {
			if (url_decode(page->prefixes[i]) < 0) {
				rc = error_set(err, ERR_INVALID,
					       "list answer: malformed url-encoded Prefix");
				goto fail;
			}
		}
	}

	free(p.text.buf);
	XML_ParserFree(p.xp);
	return ERR_OK;

fail:
	store_list_page_release(page);
	free(p.text.buf);
	XML_ParserFree(p.xp);
	return rc;
}

/* Copies s truncated to size, never splitting a UTF-8 sequence. */
static void copy_truncated(char *dst, size_t size, const char *s)
{
	size_t n = strlen(s);

	if (!dst || size == 0)
		return;
	if (n >= size) {
		n = size - 1;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(dst, s, n);
	dst[n] = '\0';
}

static void XMLCALL error_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct parser *p = ud;
	enum tag t = tag_of(name);

	if (p->rc != ERR_OK)
		return;
	p->depth++;
	if (p->depth <= STACK_MAX)
		p->stack[p->depth] = t;
	p->capturing = 0;
	if (p->depth == 1) {
		p->root = t;
		return;
	}
	if (p->depth == 2 && p->root == TAG_ERROR && (t == TAG_CODE || t == TAG_MESSAGE)) {
		p->capturing = 1;
		p->text.len = 0;
		if (text_append(&p->text, "", 0) < 0)
			parser_fail(p, ERR_NOMEM, "error answer: out of memory");
	}
}

static void XMLCALL error_end(void *ud, const XML_Char *name)
{
	struct parser *p = ud;

	if (p->rc != ERR_OK)
		return;
	if (p->capturing) {
		p->capturing = 0;
		if (p->stack[p->depth] == TAG_CODE)
			copy_truncated(p->code, p->code_size, p->text.buf);
		else
			copy_truncated(p->message, p->message_size, p->text.buf);
	}
	p->depth--;
}

enum error_code s3_xml_parse_error(const char *body, size_t len, char *code,
				   size_t code_size, char *message,
				   size_t message_size)
{
	struct parser p = {
		.code = code,
		.code_size = code_size,
		.message = message,
		.message_size = message_size,
	};
	enum error_code rc = ERR_OK;

	copy_truncated(code, code_size, "");
	copy_truncated(message, message_size, "");
	p.xp = XML_ParserCreateNS(NULL, NS_SEP);
	if (!p.xp)
		return ERR_NOMEM;
	XML_SetUserData(p.xp, &p);
	XML_SetElementHandler(p.xp, error_start, error_end);
	XML_SetCharacterDataHandler(p.xp, on_text);
	XML_SetStartDoctypeDeclHandler(p.xp, on_doctype);

	rc = parser_run(&p, body, len, "error answer");
	if (rc == ERR_OK && p.root != TAG_ERROR)
		rc = ERR_INVALID;
	if (rc != ERR_OK) {
		copy_truncated(code, code_size, "");
		copy_truncated(message, message_size, "");
	}
	free(p.text.buf);
	XML_ParserFree(p.xp);
	return rc == ERR_OK ? ERR_OK : ERR_INVALID;
}

/* Reads exactly n digits; returns -1 if any is not a digit. */
static int digits(const char **s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		char c = (*s)[i];

		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*s += n;
	return v;
}

static int days_in_month(int year, int month)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return month == 2 && leap ? 29 : days[month - 1];
}

long long s3_xml_parse_time(const char *iso8601)
{
	const char *s = iso8601;
	struct tm tm = { 0 };
	int year, mon, day, hour, min, sec;
	time_t t;

	if (!s)
		return -1;
	if ((year = digits(&s, 4)) < 0 || *s++ != '-' ||
	    (mon = digits(&s, 2)) < 0 || *s++ != '-' ||
	    (day = digits(&s, 2)) < 0 || (*s != 'T' && *s != 't'))
		return -1;
	s++;
	if ((hour = digits(&s, 2)) < 0 || *s++ != ':' ||
	    (min = digits(&s, 2)) < 0 || *s++ != ':' ||
	    (sec = digits(&s, 2)) < 0)
		return -1;
	/* Fractional seconds carry no information at our 1 s resolution. */
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -1;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	if (*s == 'Z' || *s == 'z')
		s++;
	if (*s != '\0')
		return -1;
	if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) ||
	    hour > 23 || min > 59 || sec > 60)
		return -1;

	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	t = timegm(&tm);
	return (long long)t;
}
