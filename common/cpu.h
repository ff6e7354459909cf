/*
 * cpu.h - how many CPUs this process may really use.
 *
 * In a container the CPU count the kernel reports is the node's; the
 * cgroup's CPU quota is what the process gets. Thread pools are sized from
 * cpu_available(), never from a constant (a JVM that saw one CPU in a
 * container was one cause of the slow cache in the seed study).
 */
#ifndef GRANARY_COMMON_CPU_H
#define GRANARY_COMMON_CPU_H

/*
 * Returns the number of CPUs available: the smaller of the affinity mask
 * and the cgroup quota (v2 cpu.max, or v1 cfs_quota_us / cfs_period_us),
 * rounded up, at least 1.
 */
int cpu_available(void);

/*
 * Parses cgroup v2 "cpu.max" text ("max 100000" or "150000 100000") into a
 * CPU count rounded up; returns 0 when there is no quota, -1 if malformed.
 */
int cpu_parse_cgroup2_max(const char *text);

/* Same for cgroup v1 quota and period (quota -1 means none). */
int cpu_quota_to_count(long long quota_us, long long period_us);

#endif
