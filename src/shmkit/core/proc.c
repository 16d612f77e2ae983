#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

uint64_t shk_proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* The command name (field 2) is in parentheses and may itself contain spaces and
     * parentheses: fields are counted from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    /* after ')' come fields 3.. ; the start time is field 22, i.e. the 20th from here */
    int field = 2;
    while (*p && field < 22) {
        if (*p == ' ') {
            field++;
            while (*p == ' ')
                p++;
            if (field == 22)
                break;
            continue;
        }
        p++;
    }
    if (field != 22)
        return 0;
    /* zombies have a start time too; a zombie counts as dead for our purposes */
    char *state = strrchr(buf, ')') + 2;
    if (*state == 'Z' || *state == 'X')
        return 0;
    return strtoull(p, NULL, 10);
}

int shk_proc_alive(pid_t pid, uint64_t start)
{
    if (pid <= 0)
        return 0;
    uint64_t now_start = shk_proc_start_time(pid);
    if (now_start == 0) {
        /* /proc may be hidden (hidepid); fall back to kill(0) only if start unknown */
        if (start == 0 && kill(pid, 0) == 0)
            return 1;
        if (start == 0 && errno == EPERM)
            return 1;
        return 0;
    }
    return start == 0 || now_start == start;
}

static pid_t cached_pid;
static uint64_t cached_start;

pid_t shk_self_pid(void)
{
    pid_t p = getpid();
    if (p != cached_pid) {
        cached_start = shk_proc_start_time(p);
        cached_pid = p;
    }
    return p;
}

uint64_t shk_self_start(void)
{
    shk_self_pid();
    return cached_start;
}

pid_t shk_self_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}
