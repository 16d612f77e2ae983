/*
 * proc.h - who is alive.
 *
 * A bare PID is never proof of life: PIDs are reused.  shmkit identifies a process by
 * (pid, start time), the start time being field 22 of /proc/PID/stat (clock ticks after
 * boot).  A record (pid, start) is alive only if a process with that pid exists now and
 * started at that same tick.  Where an fd is at hand, kernel-released locks (OFD locks,
 * see segment.h) are used instead.
 */
#ifndef SHK_PROC_H
#define SHK_PROC_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Start time of pid in clock ticks since boot; 0 when there is no such process. */
uint64_t shk_proc_start_time(pid_t pid);

/* 1 if (pid, start) names a live process, 0 if it is gone. start == 0 means unknown:
 * then only the pid's existence is checked. */
int shk_proc_alive(pid_t pid, uint64_t start);

/* This process's pid and start time, cached and refreshed after fork. */
pid_t shk_self_pid(void);
uint64_t shk_self_start(void);

/* The calling thread's kernel thread id. */
pid_t shk_self_tid(void);

#ifdef __cplusplus
}
#endif
#endif
