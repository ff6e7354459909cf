/*
 * test_service.c - the CSI adapter over a real rpc_server on a unix socket:
 * strings are checked at their wire length, so a NUL byte in a name, an id,
 * a path or a secret is INVALID_ARGUMENT naming the field (protobuf-c would
 * otherwise cut the string at it). The requests carry the bad string as an
 * unknown field of the right number: on the wire that is the field itself.
 * granary-meta is an address nobody serves: none of these calls reach it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csi.pb-c.h"
#include "csi/service.h"
#include "rpc/rpc_client.h"
#include "unit/check_main.h"

static char dir[] = "/tmp/test_csi_service_XXXXXX";
static char addr[128];
static struct rpc_server *srv;
static struct meta_client *meta;
static struct controller *ctl;
static struct node *nd;
static struct csi_service svc;

static void setup(void)
{
	char state[64], *roots[] = { dir };
	struct node_config ncfg = { .state_dir = state, .fuse_binary = "/nonexistent/granary-fuse",
				    .roots = roots, .nroots = 1 };
	struct controller_config ccfg = { .state_dir = state };
	struct rpc_server_options opt = { .threads = 2 };
	struct meta_client_options mopt = { .timeout_ms = 1000 };
	struct error err;

	snprintf(dir, sizeof(dir), "/tmp/test_csi_service_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(addr, sizeof(addr), "unix://%s/csi.sock", dir);
	ck_assert_int_eq(meta_client_new("unix:///nonexistent/meta.sock", &mopt, &meta, &err), ERR_OK);
	ccfg.meta = meta;
	ck_assert_msg(controller_new(&ccfg, &ctl, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(node_new(&ncfg, &nd, &err) == ERR_OK, "%s", err.msg);
	memset(&svc, 0, sizeof(svc));
	svc.controller = ctl;
	svc.node = nd;
	svc.node_id = "node-1";
	ck_assert_int_eq(rpc_server_new(&opt, &srv, &err), ERR_OK);
	ck_assert_msg(csi_service_add(srv, &svc, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(rpc_server_listen(srv, addr, NULL, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(rpc_server_start(srv, &err) == ERR_OK, "%s", err.msg);
}

static void teardown(void)
{
	char cmd[96];

	rpc_server_free(srv);
	node_free(nd);
	controller_free(ctl);
	meta_client_free(meta);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Calls method with req; the status code, with its message in err. */
static enum error_code call(const char *method, const ProtobufCMessage *req,
			    const ProtobufCMessageDescriptor *reply_desc, struct error *err)
{
	struct rpc_client_options opt = { .wait_for_ready = true };
	ProtobufCMessage *reply = NULL;
	struct rpc_client *c = NULL;
	enum error_code rc;

	ck_assert_int_eq(rpc_client_new(addr, &opt, &c, err), ERR_OK);
	rc = rpc_client_call(c, method, req, reply_desc, 10000, &reply, err);
	if (reply)
		protobuf_c_message_free_unpacked(reply, NULL);
	rpc_client_free(c);
	return rc;
}

/* A length-delimited field of number tag holding data[0..len) (under 128
 * bytes), into buf: protobuf-c packs an unknown field's bytes as they are,
 * its length prefix included. */
static void raw_field(ProtobufCMessageUnknownField *f, uint8_t *buf, uint32_t tag,
		      const void *data, size_t len)
{
	ck_assert_uint_lt(len, 128);
	buf[0] = (uint8_t)len;
	memcpy(buf + 1, data, len);
	f->tag = tag;
	f->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
	f->len = len + 1;
	f->data = buf;
}

/* err's message ends with want (the client puts the call in front). */
#define ck_assert_msg_ends(err, want)                                                        \
	ck_assert_msg(strlen((err).msg) >= strlen(want) &&                                   \
			      strcmp((err).msg + strlen((err).msg) - strlen(want), want) == 0, \
		      "'%s' does not end with '%s'", (err).msg, want)

/* The call is INVALID_ARGUMENT, its message ends with want. */
static void expect_invalid(const char *method, const ProtobufCMessage *req,
			   const ProtobufCMessageDescriptor *reply_desc, const char *want)
{
	struct error err;

	ck_assert_int_eq(call(method, req, reply_desc, &err), ERR_INVALID);
	ck_assert_msg_ends(err, want);
	/* What the tests mark as a secret value never comes back. */
	ck_assert_ptr_null(strstr(err.msg, "hidden"));
}

/* A map entry {key, value} on the wire into buf (short strings); its size. */
static size_t raw_entry(uint8_t *buf, const char *key, size_t key_len, const void *value,
			size_t value_len)
{
	size_t n = 0;

	buf[n++] = 0x0a;
	buf[n++] = (uint8_t)key_len;
	memcpy(buf + n, key, key_len);
	n += key_len;
	buf[n++] = 0x12;
	buf[n++] = (uint8_t)value_len;
	memcpy(buf + n, value, value_len);
	return n + value_len;
}

START_TEST(test_service_nul_in_name_is_invalid_not_a_shorter_name)
{
	Csi__V1__CreateVolumeRequest req = CSI__V1__CREATE_VOLUME_REQUEST__INIT;
	ProtobufCMessageUnknownField f;
	uint8_t wire[128];

	raw_field(&f, wire, 1, "pvc-a\0b", 7);
	req.base.n_unknown_fields = 1;
	req.base.unknown_fields = &f;
	expect_invalid("/csi.v1.Controller/CreateVolume", &req.base,
		       &csi__v1__create_volume_response__descriptor,
		       "field 'name': holds a NUL byte");
}
END_TEST

START_TEST(test_service_nul_in_secret_names_the_key_never_the_value)
{
	Csi__V1__CreateVolumeRequest req = CSI__V1__CREATE_VOLUME_REQUEST__INIT;
	ProtobufCMessageUnknownField f[2];
	uint8_t entry[64], param[64], wire[128], wire2[128];

	req.name = "pvc-a";
	raw_field(&f[0], wire, 4, param, raw_entry(param, "source", 6, "s3://b/\0x/", 10));
	raw_field(&f[1], wire2, 5, entry, raw_entry(entry, "accessKeyID", 11, "AKIA\0hidden", 11));
	req.base.n_unknown_fields = 1;
	req.base.unknown_fields = f;
	expect_invalid("/csi.v1.Controller/CreateVolume", &req.base,
		       &csi__v1__create_volume_response__descriptor,
		       "field 'parameters': the value of key 'source' holds a NUL byte");
	req.base.unknown_fields = &f[1];
	expect_invalid("/csi.v1.Controller/CreateVolume", &req.base,
		       &csi__v1__create_volume_response__descriptor,
		       "field 'secrets': the value of key 'accessKeyID' holds a NUL byte");
	/* A key too. */
	raw_field(&f[1], wire2, 5, entry, raw_entry(entry, "access\0KeyID", 12, "AKIA", 4));
	expect_invalid("/csi.v1.Controller/CreateVolume", &req.base,
		       &csi__v1__create_volume_response__descriptor,
		       "field 'secrets': a key holds a NUL byte");
}
END_TEST

START_TEST(test_service_nul_in_node_ids_and_paths_is_invalid)
{
	Csi__V1__NodeUnpublishVolumeRequest unpub = CSI__V1__NODE_UNPUBLISH_VOLUME_REQUEST__INIT;
	Csi__V1__NodeUnstageVolumeRequest unstage = CSI__V1__NODE_UNSTAGE_VOLUME_REQUEST__INIT;
	Csi__V1__DeleteVolumeRequest del = CSI__V1__DELETE_VOLUME_REQUEST__INIT;
	ProtobufCMessageUnknownField f;
	uint8_t wire[160];
	char target[128];
	size_t len;

	raw_field(&f, wire, 1, "pvc-a\0/../../x", 14);
	unstage.staging_target_path = target;
	snprintf(target, sizeof(target), "%s/globalmount", dir);
	unstage.base.n_unknown_fields = 1;
	unstage.base.unknown_fields = &f;
	expect_invalid("/csi.v1.Node/NodeUnstageVolume", &unstage.base,
		       &csi__v1__node_unstage_volume_response__descriptor,
		       "field 'volume_id': holds a NUL byte");
	del.base.n_unknown_fields = 1;
	del.base.unknown_fields = &f;
	expect_invalid("/csi.v1.Controller/DeleteVolume", &del.base,
		       &csi__v1__delete_volume_response__descriptor,
		       "field 'volume_id': holds a NUL byte");

	len = (size_t)snprintf(target, sizeof(target), "%s/t", dir);
	memcpy(target + len, "\0/x", 3);
	raw_field(&f, wire, 2, target, len + 3);
	unpub.volume_id = "pvc-a";
	unpub.base.n_unknown_fields = 1;
	unpub.base.unknown_fields = &f;
	expect_invalid("/csi.v1.Node/NodeUnpublishVolume", &unpub.base,
		       &csi__v1__node_unpublish_volume_response__descriptor,
		       "field 'target_path': holds a NUL byte");
}
END_TEST

START_TEST(test_service_clean_requests_still_reach_the_cores)
{
	Csi__V1__NodeUnpublishVolumeRequest unpub = CSI__V1__NODE_UNPUBLISH_VOLUME_REQUEST__INIT;
	Csi__V1__GetPluginInfoRequest info = CSI__V1__GET_PLUGIN_INFO_REQUEST__INIT;
	char target[128];
	struct error err;

	ck_assert_msg(call("/csi.v1.Identity/GetPluginInfo", &info.base,
			   &csi__v1__get_plugin_info_response__descriptor, &err) == ERR_OK,
		      "%s", err.msg);
	snprintf(target, sizeof(target), "%s/t", dir);
	unpub.volume_id = "pvc-a";
	unpub.target_path = target;
	ck_assert_msg(call("/csi.v1.Node/NodeUnpublishVolume", &unpub.base,
			   &csi__v1__node_unpublish_volume_response__descriptor, &err) == ERR_OK,
		      "%s", err.msg);
	unpub.volume_id = "";
	expect_invalid("/csi.v1.Node/NodeUnpublishVolume", &unpub.base,
		       &csi__v1__node_unpublish_volume_response__descriptor,
		       "field 'volume_id': required");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi_service");
	TCase *tc = tcase_create("wire");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_service_nul_in_name_is_invalid_not_a_shorter_name);
	tcase_add_test(tc, test_service_nul_in_secret_names_the_key_never_the_value);
	tcase_add_test(tc, test_service_nul_in_node_ids_and_paths_is_invalid);
	tcase_add_test(tc, test_service_clean_requests_still_reach_the_cores);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
