/*
 * test_health.c - the checks behind /healthz and /readyz, and /metrics
 * with and without the node role (no volume staged). The routes are
 * common/metrics_http.c's (unit/common/test_metrics_http.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csi/health.h"
#include "unit/check_main.h"

START_TEST(test_health_node_live_without_meta_ready_after_registration)
{
	char dir[] = "/tmp/granary-health-XXXXXX", sock[128];
	struct registration reg;
	struct health h = { 0 };
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/csi.sock", dir);
	check_make_socket(sock);
	registration_init(&reg, "/var/lib/kubelet/plugins/csi.granary.io/csi.sock");
	h.csi_socket = sock;
	h.reg = &reg;
	/* The node role has no probe client: meta is never asked. */
	ck_assert_int_eq(health_check(&h, HEALTH_LIVE, &err), ERR_OK);
	ck_assert_int_eq(health_check(&h, HEALTH_READY, &err), ERR_UNAVAILABLE);
	ck_assert_int_eq(error_to_http(err.code), 503);
	ck_assert_ptr_nonnull(strstr(err.msg, "not registered with the kubelet yet"));
	registration_notify(&reg, true, NULL);
	ck_assert_int_eq(health_check(&h, HEALTH_READY, &err), ERR_OK);
	registration_notify(&reg, false, "driver name csi.granary.io already registered");
	ck_assert_int_eq(health_check(&h, HEALTH_READY, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "driver name csi.granary.io already registered"));
	ck_assert_int_eq(health_check(&h, HEALTH_LIVE, &err), ERR_OK);
	/* Without registration, ready is live. */
	h.reg = NULL;
	ck_assert_int_eq(health_check(&h, HEALTH_READY, &err), ERR_OK);
	/* The CSI socket removed: neither live nor ready. */
	ck_assert_int_eq(unlink(sock), 0);
	ck_assert_int_eq(health_check(&h, HEALTH_LIVE, &err), ERR_UNAVAILABLE);
	ck_assert_str_eq(err.msg + strlen(err.msg) - strlen("/csi.sock' is gone"),
			 "/csi.sock' is gone");
	ck_assert_int_eq(health_check(&h, HEALTH_READY, &err), ERR_UNAVAILABLE);
	/* A TCP endpoint has no file to look for. */
	h.csi_socket = "";
	ck_assert_int_eq(health_check(&h, HEALTH_LIVE, &err), ERR_OK);
	registration_release(&reg);
	rmdir(dir);
}
END_TEST

START_TEST(test_health_controller_live_without_meta_ready_only_with_it)
{
	struct meta_client_options opt = { .timeout_ms = 1000 };
	struct meta_client *probe = NULL;
	struct health h = { 0 };
	struct error err;

	ck_assert_int_eq(meta_client_new("unix:///nonexistent/granary-health-test/meta.sock", &opt,
					 &probe, &err),
			 ERR_OK);
	h.probe = probe;
	/* Meta is another container with its own probes: restarting the
	 * controller for its outage mends nothing. */
	ck_assert_int_eq(health_check(&h, HEALTH_LIVE, &err), ERR_OK);
	ck_assert_int_eq(health_check(&h, HEALTH_READY, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "granary-meta does not answer: "));
	meta_client_free(probe);
}
END_TEST

START_TEST(test_health_metrics_count_staged_volumes_in_the_node_role)
{
	char dir[] = "/tmp/granary-health-XXXXXX", state[64], *roots[] = { "/var/lib/kubelet" };
	struct node_config cfg = { .state_dir = state, .fuse_binary = "/nonexistent/granary-fuse",
				   .roots = roots, .nroots = 1 };
	struct metrics_buf b = { 0 };
	struct health h = { 0 };
	struct error err;
	char cmd[80];

	/* The controller role alone stages nothing: no node families. */
	ck_assert_int_eq(health_metrics(&h, &b, &err), ERR_OK);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(state, sizeof(state), "%s/state", dir);
	ck_assert_int_eq(node_new(&cfg, &h.node, &err), ERR_OK);
	ck_assert_int_eq(health_metrics(&h, &b, &err), ERR_OK);
	ck_assert_str_eq(b.data,
			 "# HELP granary_csi_volumes_staged volumes staged on this node\n"
			 "# TYPE granary_csi_volumes_staged gauge\n"
			 "granary_csi_volumes_staged 0\n"
			 "# HELP granary_csi_volume_abnormal 1 while a staged volume's mount cannot serve (NodeGetVolumeStats' condition says why)\n"
			 "# TYPE granary_csi_volume_abnormal gauge\n"
			 "# HELP granary_csi_fuse_restarts_total successors of a staged volume's granary-fuse the node plugin started\n"
			 "# TYPE granary_csi_fuse_restarts_total counter\n"
			 "# HELP granary_csi_fuse_restart_backoff_seconds how long the next successor of a volume's granary-fuse waits after one failed at start (0: starts at once)\n"
			 "# TYPE granary_csi_fuse_restart_backoff_seconds gauge\n");
	metrics_buf_release(&b);
	node_free(h.node);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("health");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_health_node_live_without_meta_ready_after_registration);
	tcase_add_test(tc, test_health_controller_live_without_meta_ready_only_with_it);
	tcase_add_test(tc, test_health_metrics_count_staged_volumes_in_the_node_role);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
