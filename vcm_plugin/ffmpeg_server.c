/* A fork server for an unmodified, dynamically linked ffmpeg (see vcm_plugin/ffmpeg_server.py).
 *
 * Loaded with LD_PRELOAD into the ffmpeg executable. It wraps __libc_start_main; when the
 * environment variable VCM_FFMPEG_SERVER_FD names a SOCK_SEQPACKET socket, the process does
 * not run ffmpeg's main() but serves requests on that socket. Everything a fresh ffmpeg
 * process does before main() (the dynamic loader's ~200,000 relocations, the library
 * constructors) is done once; each request then forks a copy that calls the same main()
 * with the request's argument list, environment and working directory, so its output is
 * that of `ffmpeg ARGS` started afresh, only without the ~10 ms of start-up.
 *
 * Protocol. On start the server sends the record "R" + int32 protocol version. A request is
 * one message: the NUL-terminated fields "VCM2", the working directory, the CPUs the process
 * may run on (comma-separated; empty: unchanged), the argument count N, the N arguments
 * (argv[0] first) and the environment entries, with 4 descriptors
 * (SCM_RIGHTS): a reply socket, the read end of ffmpeg's stdin, the write end of the output
 * pipe (it becomes fd 3: the command says "pipe:3") and the write end of stderr; stdout is
 * /dev/null. A waiter process per request forks ffmpeg, sends "P" + pid on the reply socket,
 * waits for it and sends "S" + the wait status, or "E" + errno when it cannot fork. When the
 * client shuts down (or closes) its end of the reply socket before ffmpeg ended (a time-out,
 * or the client died), the waiter kills ffmpeg with SIGKILL, reaps it and sends "S" as
 * usual: ffmpeg is only ever killed by its parent, so a pid that was reused cannot be hit.
 * ffmpeg dies with its waiter (PR_SET_PDEATHSIG). The server exits when the control socket
 * reaches end of file (its client closed it or died).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROTOCOL_VERSION 2
#define MAX_REQUEST (512 * 1024)
#define MAX_FIELDS 16384
#define HIGH_FD 64

typedef int (*main_fn)(int, char **, char **);
typedef int (*start_fn)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);

static main_fn real_main;
static int child_exited[2] = {-1, -1}; /* the waiter's self-pipe: written on SIGCHLD */
extern char **environ;

static void send_record(int fd, char kind, int32_t value) {
    char buf[5];
    buf[0] = kind;
    memcpy(buf + 1, &value, sizeof value);
    while (send(fd, buf, sizeof buf, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

static void close_from(int lowest) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowest, ~0U, 0) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (int fd = lowest; fd < (max > 0 ? max : 65536); fd++) close(fd);
}

/* In the forked ffmpeg: descriptors, directory, environment as a fresh process gets them; never returns. */
static void run_ffmpeg(int fds[4], char *cwd, char *cpus, int argc, char **argv, char **envp, pid_t waiter) {
    sigset_t none;
    sigemptyset(&none);
    signal(SIGCHLD, SIG_DFL); /* the dispositions and mask of a fresh process */
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != waiter) _exit(126); /* dies with its waiter */
    int high[3];
    for (int i = 0; i < 3; i++) high[i] = fcntl(fds[i + 1], F_DUPFD, HIGH_FD); /* out of the way of 0..3 */
    int devnull = open("/dev/null", O_WRONLY);
    if (high[0] < 0 || high[1] < 0 || high[2] < 0 || devnull < 0) _exit(126);
    if (dup2(high[0], 0) < 0 || dup2(devnull, 1) < 0 || dup2(high[2], 2) < 0 || dup2(high[1], 3) < 0) _exit(126);
    close_from(4);
    if (cwd[0] && chdir(cwd) != 0) _exit(126);
    if (cpus[0]) { /* the caller's CPU affinity: ffmpeg's thread counts follow it */
        cpu_set_t set;
        CPU_ZERO(&set);
        for (char *p = cpus; *p; p++) {
            int cpu = (int)strtol(p, &p, 10);
            if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
            if (!*p) break;
        }
        if (sched_setaffinity(0, sizeof set, &set) != 0) _exit(126);
    }
    environ = envp;
    exit(real_main(argc, argv, envp));
}

static void on_child_exit(int sig) {
    int saved = errno;
    char c = (char)sig;
    if (write(child_exited[1], &c, 1) < 0) { /* full: a wake-up is pending anyway */
    }
    errno = saved;
}

/* Until ffmpeg (`child`) ended: its wait status; kills it first when the client gave up (the reply socket reached end of file). */
static int reap(pid_t child, int reply) {
    int status = 0, killed = 0;
    for (;;) {
        pid_t done = waitpid(child, &status, WNOHANG);
        if (done == child) return status;
        if (done < 0 && errno != EINTR) return 127 << 8; /* cannot happen: as if exit(127) */
        struct pollfd ends[2] = {{child_exited[0], POLLIN, 0}, {killed ? -1 : reply, POLLIN | POLLRDHUP, 0}};
        if (poll(ends, 2, -1) < 0) continue;
        if (ends[0].revents) {
            char drain[64];
            while (read(child_exited[0], drain, sizeof drain) > 0) {
            }
        }
        if (!killed && ends[1].revents) {
            char byte;
            ssize_t got = recv(reply, &byte, 1, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
                (ends[1].revents & (POLLHUP | POLLRDHUP | POLLERR))) {
                kill(child, SIGKILL); /* not reaped yet: the pid is still ffmpeg's */
                killed = 1;
            }
        }
    }
}

/* The waiter: forks ffmpeg, reports its pid, waits for it, reports its wait status; never returns. */
static void wait_for_ffmpeg(int fds[4], char *buf, ssize_t size) {
    static char *fields[MAX_FIELDS + 2];
    int n = 0;
    for (char *p = buf; p < buf + size && n < MAX_FIELDS; p += strlen(p) + 1) fields[n++] = p;
    int reply = fds[0];
    if (n < 4 || strcmp(fields[0], "VCM2") != 0) {
        send_record(reply, 'E', EINVAL);
        _exit(1);
    }
    int argc = atoi(fields[3]);
    if (argc < 1 || 4 + argc > n) {
        send_record(reply, 'E', EINVAL);
        _exit(1);
    }
    if (pipe2(child_exited, O_CLOEXEC | O_NONBLOCK) != 0) {
        send_record(reply, 'E', errno);
        _exit(1);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_child_exit;
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&action.sa_mask);
    sigaction(SIGCHLD, &action, NULL);
    char **argv = fields + 4;
    char **envp = fields + 4 + argc + 1; /* the env entries are moved one slot up, after argv's NULL */
    memmove(envp, fields + 4 + argc, (size_t)(n - 4 - argc) * sizeof(char *));
    envp[n - 4 - argc] = NULL;
    argv[argc] = NULL;
    pid_t waiter = getpid();
    pid_t child = fork();
    if (child == 0) run_ffmpeg(fds, fields[1], fields[2], argc, argv, envp, waiter);
    int saved = errno;
    close(fds[1]);
    close(fds[2]);
    close(fds[3]);
    if (child < 0) {
        send_record(reply, 'E', saved);
        _exit(1);
    }
    send_record(reply, 'P', child);
    send_record(reply, 'S', reap(child, reply));
    _exit(0);
}

static int serve(int ctl) {
    static char buf[MAX_REQUEST + 1];
    signal(SIGCHLD, SIG_IGN); /* the waiters are reaped by the kernel */
    send_record(ctl, 'R', PROTOCOL_VERSION);
    for (;;) {
        union {
            char c[CMSG_SPACE(8 * sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {buf, MAX_REQUEST};
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.c;
        msg.msg_controllen = sizeof control.c;
        ssize_t size = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC);
        if (size < 0 && errno == EINTR) continue;
        if (size <= 0) return 0; /* the client closed the control socket */
        int fds[4] = {-1, -1, -1, -1}, nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (nfds < 4) fds[nfds++] = fd;
                else close(fd);
            }
        }
        if (nfds != 4 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            if (nfds >= 1) send_record(fds[0], 'E', EMSGSIZE);
            for (int i = 0; i < nfds; i++) close(fds[i]);
            continue;
        }
        buf[size] = 0;
        pid_t waiter = fork();
        if (waiter == 0) {
            close(ctl);
            wait_for_ffmpeg(fds, buf, size);
        }
        if (waiter < 0) send_record(fds[0], 'E', errno);
        for (int i = 0; i < 4; i++) close(fds[i]);
    }
}

static int hooked_main(int argc, char **argv, char **envp) {
    const char *fd = getenv("VCM_FFMPEG_SERVER_FD");
    if (fd && *fd) return serve(atoi(fd));
    return real_main(argc, argv, envp);
}

int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end) {
    start_fn real = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    real_main = main;
    return real(hooked_main, argc, argv, init, fini, rtld_fini, stack_end);
}
