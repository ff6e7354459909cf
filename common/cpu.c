/*
 * cpu.c - usable CPU count from the affinity mask and the cgroup quota.
 */
#include "common/cpu.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

int cpu_quota_to_count(long long quota_us, long long period_us)
{
	if (quota_us <= 0 || period_us <= 0)
		return 0;
	return (int)((quota_us + period_us - 1) / period_us);
}

int cpu_parse_cgroup2_max(const char *text)
{
	char quota[32];
	long long period = 0;

	if (!text || sscanf(text, "%31s %lld", quota, &period) != 2 || period <= 0)
		return -1;
	if (strcmp(quota, "max") == 0)
		return 0;
	long long q;
	char *end = NULL;

	q = strtoll(quota, &end, 10);
	if (*end != '\0' || q <= 0)
		return -1;
	return cpu_quota_to_count(q, period);
}

static int cgroup_quota(void)
{
	char buf[128];
	long long quota, period;

	if (fileio_read_text("/sys/fs/cgroup/cpu.max", buf, sizeof(buf)) >= 0)
		return cpu_parse_cgroup2_max(buf) > 0 ? cpu_parse_cgroup2_max(buf) : 0;
	if (fileio_read_text("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", buf, sizeof(buf)) < 0 ||
	    sscanf(buf, "%lld", &quota) != 1)
		return 0;
	if (fileio_read_text("/sys/fs/cgroup/cpu/cpu.cfs_period_us", buf, sizeof(buf)) < 0 ||
	    sscanf(buf, "%lld", &period) != 1)
		return 0;
	return cpu_quota_to_count(quota, period);
}

int cpu_available(void)
{
	cpu_set_t set;
	int n = 0, quota;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n <= 0)
		n = 1;
	quota = cgroup_quota();
	if (quota > 0 && quota < n)
		n = quota;
	return n;
}
