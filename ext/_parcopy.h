/* The one copy of a plain array into shared memory, split between the
 * calling thread and one worker pthread (framerpc.wire._shmpath copy_into).
 *
 * A copy of at least pc_threshold bytes is cut into chunks that both
 * threads take from one atomic counter: the caller starts at once, the
 * worker (woken by a futex) joins when the scheduler runs it and takes
 * chunks too, and the caller waits at the end only for a chunk the worker
 * is in the middle of. A worker that never gets a CPU costs one futex wake:
 * the caller then copies everything itself. Neither thread holds the GIL.
 * A futex wake may queue the worker on the waker's CPU, where it runs only
 * after the caller's copy (measured: it then joined 1-18% of the jobs), so
 * the worker's affinity excludes the caller's CPU (one sched_setaffinity
 * whenever the caller's CPU changed; then it joined 95-100%).
 *
 * Only one copy at a time uses the worker (pc.busy, a try-lock); copies
 * made meanwhile by other threads run alone. The worker exists only while
 * someone holds the copier (pc_hold / pc_release: each server's arena),
 * only in a process allowed on 2 or more CPUs, and is started on the first
 * big copy; the last release stops and joins it; after fork() the child has
 * none (pthread_atfork) and starts its own on its next big copy.
 *
 * Memory ordering: a job's fields are written before state becomes
 * PC_OPEN (release); the worker reads them after its compare-and-swap
 * PC_OPEN -> PC_JOINED (acquire); the worker's bytes are written before
 * PC_DONE (release, seq_cst), which the caller loads (acquire) before it
 * returns, and only then is the reply sent.
 */
#ifndef FRAMERPC_PARCOPY_H
#define FRAMERPC_PARCOPY_H

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define PC_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define PC_RELAX() __asm__ __volatile__("yield")
#else
#define PC_RELAX() do { } while (0)
#endif

enum { PC_IDLE = 0, PC_OPEN = 1, PC_JOINED = 2, PC_DONE = 3 };
/* test modes (pc.mode): the worker copies every chunk (the caller only
 * waits), or the caller never posts (the worker is never used) */
enum { PC_SPLIT = 0, PC_WORKER_ONLY = 1, PC_ALONE = 2 };

static struct {
    /* the job, written by its caller (holding busy) before PC_OPEN */
    char *dst;
    const char *src;
    size_t n, chunk, nchunks;
    size_t next;        /* atomic: the next chunk to take */
    int state;          /* atomic; the futex the caller waits on */
    int posted;         /* atomic; the futex the worker sleeps on */
    int busy;           /* atomic try-lock: the job using the worker */
    int waiting;        /* atomic: the caller sleeps on state */
    int stop;           /* atomic: the worker must end */
    int alive;          /* atomic: the worker runs */
    int users;          /* atomic (changed under life) */
    int refused;        /* one CPU or no thread: not started until users drop to 0 */
    int atfork;         /* pthread_atfork registered (under life) */
    int mode;           /* PC_SPLIT, or a test mode */
    size_t threshold;   /* bytes: smaller copies are one memcpy */
    size_t chunk_bytes;
    int spin;           /* caller's pause loops before it sleeps on state */
    int avoid;          /* keep the worker off the caller's CPU (affinity) */
    int caller_cpu;     /* the job's caller's CPU when it posted */
    int barred_cpu;     /* the CPU the worker's affinity excludes, or -1 */
    int tid;            /* the worker's thread id (set before it runs jobs) */
    cpu_set_t allowed;  /* the process's CPUs when the worker started */
    pthread_t thread;
    pthread_mutex_t life; /* starting, stopping */
    /* counters (relaxed; read by tests and benchmarks) */
    unsigned long jobs, joined, worker_chunks, chunks, alone, slept, started;
    unsigned long same_cpu, moved;
} pc = {
    /* measured on 2 vCPUs (benchmarks/bench_parcopy.py): a split 3 MB copy
     * is as slow as one memcpy (the wake costs what the worker saves), a
     * 4 MB one 0.94x, 5.76 MB 0.70-0.79x, 24.9 MB 0.61-0.69x; chunks of
     * 256 KiB to 1 MiB alike, the smaller keeps the caller's last wait short */
    .threshold = 7u << 19, /* 3.5 MiB */
    .chunk_bytes = 256u << 10,
    /* ~28 ns a pause here: ~28 us, a few chunks' time, then the futex */
    .spin = 1000,
    .avoid = 1,
    .barred_cpu = -1,
    .life = PTHREAD_MUTEX_INITIALIZER,
};

#define PC_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define PC_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define PC_COUNT(p) __atomic_fetch_add((p), 1, __ATOMIC_RELAXED)

static inline void pc_futex_wait(int *word, int value)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static inline void pc_futex_wake(int *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Take chunks of the open job until none is left; the number taken. */
static inline size_t pc_take_chunks(void)
{
    size_t taken = 0, i, start, len;
    for (;;) {
        i = __atomic_fetch_add(&pc.next, 1, __ATOMIC_RELAXED);
        if (i >= pc.nchunks)
            return taken;
        start = i * pc.chunk;
        len = pc.n - start < pc.chunk ? pc.n - start : pc.chunk;
        memcpy(pc.dst + start, pc.src + start, len);
        taken++;
    }
}

static void *pc_worker(void *first)
{
    /* the jobs posted before pthread_create are not its; one posted after
     * (even before this thread first runs) is */
    int seen = (int)(intptr_t)first, now, expected;
    size_t taken;
    PC_STORE(&pc.tid, (int)syscall(SYS_gettid));
    for (;;) {
        while ((now = PC_LOAD(&pc.posted)) == seen) {
            if (PC_LOAD(&pc.stop))
                return NULL;
            pc_futex_wait(&pc.posted, seen);
        }
        seen = now;
        if (PC_LOAD(&pc.stop))
            return NULL;
        expected = PC_OPEN;
        if (!__atomic_compare_exchange_n(&pc.state, &expected, PC_JOINED, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue; /* woken late: that job is closed */
        if (sched_getcpu() == pc.caller_cpu)
            PC_COUNT(&pc.same_cpu);
        taken = pc_take_chunks();
        __atomic_fetch_add(&pc.worker_chunks, taken, __ATOMIC_RELAXED);
        __atomic_store_n(&pc.state, PC_DONE, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&pc.waiting, __ATOMIC_SEQ_CST))
            pc_futex_wake(&pc.state);
    }
}

/* In a forked child: no worker, no job (the parent's threads are gone). */
static void pc_after_fork_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pc.life = fresh;
    pc.alive = 0;
    pc.busy = 0;
    pc.state = PC_IDLE;
    pc.waiting = 0;
    pc.stop = 0;
    pc.refused = 0;
    pc.tid = 0; /* the parent's worker: never move it from here */
    pc.barred_cpu = -1;
}

/* Start the worker if someone holds the copier (call under life). */
static void pc_start_locked(void)
{
    cpu_set_t cpus;
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;
    if (pc.alive || pc.refused || PC_LOAD(&pc.users) <= 0)
        return;
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0 || CPU_COUNT(&cpus) < 2) {
        pc.refused = 1; /* one CPU: a second thread could only slow the copy */
        return;
    }
    pc.allowed = cpus;
    pc.barred_cpu = -1;
    PC_STORE(&pc.tid, 0);
    if (!pc.atfork) {
        if (pthread_atfork(NULL, NULL, pc_after_fork_child) != 0) {
            pc.refused = 1;
            return;
        }
        pc.atfork = 1;
    }
    PC_STORE(&pc.stop, 0);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64u << 10);
    /* signals go to Python's threads, never to this one */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&pc.thread, &attr, pc_worker,
                        (void *)(intptr_t)PC_LOAD(&pc.posted));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pc.refused = 1;
        return;
    }
    pthread_setname_np(pc.thread, "framerpc-copy");
    PC_COUNT(&pc.started);
    PC_STORE(&pc.alive, 1);
}

/* Stop and join the worker (call under life). */
static void pc_stop_locked(void)
{
    if (!pc.alive)
        return;
    PC_STORE(&pc.stop, 1);
    __atomic_fetch_add(&pc.posted, 1, __ATOMIC_SEQ_CST);
    pc_futex_wake(&pc.posted);
    pthread_join(pc.thread, NULL);
    PC_STORE(&pc.alive, 0);
    PC_STORE(&pc.tid, 0);
}

/* One more user: big copies may use the worker. Returns the users. */
static int pc_hold(void)
{
    int users;
    pthread_mutex_lock(&pc.life);
    users = __atomic_add_fetch(&pc.users, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&pc.life);
    return users;
}

/* One user fewer; the last one stops and joins the worker. Returns the
 * users left (never below 0). */
static int pc_release(void)
{
    int users;
    pthread_mutex_lock(&pc.life);
    users = PC_LOAD(&pc.users);
    if (users > 0)
        users = __atomic_sub_fetch(&pc.users, 1, __ATOMIC_ACQ_REL);
    if (users == 0) {
        pc_stop_locked();
        pc.refused = 0; /* the next user may run on more CPUs */
    }
    pthread_mutex_unlock(&pc.life);
    return users;
}

/* The caller's wait for the worker's last chunk: spin a bounded while (the
 * worker is at most one chunk from the end), then sleep on state. */
static inline void pc_wait_done(void)
{
    int i, state;
    for (i = 0; i < pc.spin; i++) {
        if (PC_LOAD(&pc.state) == PC_DONE)
            return;
        PC_RELAX();
    }
    PC_COUNT(&pc.slept);
    __atomic_store_n(&pc.waiting, 1, __ATOMIC_SEQ_CST);
    while ((state = __atomic_load_n(&pc.state, __ATOMIC_SEQ_CST)) != PC_DONE)
        pc_futex_wait(&pc.state, state); /* the worker wakes it at PC_DONE */
    __atomic_store_n(&pc.waiting, 0, __ATOMIC_RELAXED);
}

/* Keep the worker off the caller's CPU: a futex wake may queue it there
 * (behind the caller, or preempting it), so the two would share one CPU.
 * One sched_setaffinity when the caller's CPU changed (under busy; and
 * under life, so that the thread id is the running worker's, never one
 * the kernel gave again after it was joined). */
static inline void pc_bar(int cpu)
{
    cpu_set_t others;
    int tid;
    if (cpu == pc.barred_cpu || cpu < 0)
        return;
    pthread_mutex_lock(&pc.life);
    tid = PC_LOAD(&pc.tid);
    if (pc.alive && tid != 0 && CPU_ISSET(cpu, &pc.allowed)) {
        others = pc.allowed;
        CPU_CLR(cpu, &others);
        if (CPU_COUNT(&others) > 0
                && sched_setaffinity(tid, sizeof others, &others) == 0) {
            pc.barred_cpu = cpu;
            PC_COUNT(&pc.moved);
        }
    }
    pthread_mutex_unlock(&pc.life);
}

/* Copy n bytes from src to dst (not overlapping), split with the worker
 * when n is big and the worker is free; returns once every byte is
 * written. Call without the GIL. */
static void pc_copy(char *dst, const char *src, size_t n)
{
    int expected;
    if (n < pc.threshold || pc.mode == PC_ALONE || PC_LOAD(&pc.users) <= 0) {
        memcpy(dst, src, n);
        return;
    }
    if (!PC_LOAD(&pc.alive)) {
        pthread_mutex_lock(&pc.life);
        pc_start_locked();
        pthread_mutex_unlock(&pc.life);
    }
    if (!PC_LOAD(&pc.alive) || __atomic_exchange_n(&pc.busy, 1, __ATOMIC_ACQUIRE)) {
        PC_COUNT(&pc.alone); /* no worker, or another copy is using it */
        memcpy(dst, src, n);
        return;
    }
    pc.dst = dst;
    pc.src = src;
    pc.n = n;
    pc.chunk = pc.chunk_bytes;
    pc.nchunks = (n + pc.chunk - 1) / pc.chunk;
    pc.caller_cpu = sched_getcpu();
    if (pc.avoid)
        pc_bar(pc.caller_cpu);
    else if (pc.barred_cpu != -1) {
        /* tests and benchmarks: back to every CPU */
        pthread_mutex_lock(&pc.life);
        if (pc.alive && PC_LOAD(&pc.tid) != 0)
            sched_setaffinity(PC_LOAD(&pc.tid), sizeof pc.allowed, &pc.allowed);
        pc.barred_cpu = -1;
        pthread_mutex_unlock(&pc.life);
    }
    __atomic_fetch_add(&pc.chunks, pc.nchunks, __ATOMIC_RELAXED);
    __atomic_store_n(&pc.next, 0, __ATOMIC_RELAXED);
    PC_STORE(&pc.state, PC_OPEN);
    __atomic_fetch_add(&pc.posted, 1, __ATOMIC_RELEASE);
    pc_futex_wake(&pc.posted);
    PC_COUNT(&pc.jobs);
    if (pc.mode == PC_WORKER_ONLY) {
        /* test mode: the worker copies everything; it runs (alive) */
        pc_wait_done();
        PC_COUNT(&pc.joined);
    } else {
        pc_take_chunks();
        expected = PC_OPEN;
        if (!__atomic_compare_exchange_n(&pc.state, &expected, PC_IDLE, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            /* the worker joined: wait for its last chunk */
            PC_COUNT(&pc.joined);
            pc_wait_done();
        }
    }
    /* the worker leaves a job only through PC_DONE, and the job was
     * closed: nobody else touches state until the next job */
    __atomic_store_n(&pc.state, PC_IDLE, __ATOMIC_RELAXED);
    PC_STORE(&pc.busy, 0);
}

/* Tests and benchmarks: the threshold, the chunk, the spin and the mode
 * (0 keeps a value; mode -1 keeps it). Not while a copy runs. */
static void pc_configure(size_t threshold, size_t chunk, int spin, int mode,
                         int avoid)
{
    if (avoid >= 0)
        pc.avoid = avoid;
    if (threshold)
        pc.threshold = threshold;
    if (chunk)
        pc.chunk_bytes = chunk;
    if (spin >= 0)
        pc.spin = spin;
    if (mode >= 0)
        pc.mode = mode;
}

/* The settings and counters, in the order of _shmpath's copier_stats. */
static void pc_read(unsigned long out[15])
{
    out[0] = (unsigned long)PC_LOAD(&pc.users);
    out[1] = (unsigned long)PC_LOAD(&pc.alive);
    out[2] = __atomic_load_n(&pc.started, __ATOMIC_RELAXED);
    out[3] = __atomic_load_n(&pc.jobs, __ATOMIC_RELAXED);
    out[4] = __atomic_load_n(&pc.joined, __ATOMIC_RELAXED);
    out[5] = __atomic_load_n(&pc.chunks, __ATOMIC_RELAXED);
    out[6] = __atomic_load_n(&pc.worker_chunks, __ATOMIC_RELAXED);
    out[7] = __atomic_load_n(&pc.alone, __ATOMIC_RELAXED);
    out[8] = __atomic_load_n(&pc.slept, __ATOMIC_RELAXED);
    out[9] = pc.threshold;
    out[10] = pc.chunk_bytes;
    out[11] = (unsigned long)pc.spin;
    out[12] = (unsigned long)pc.avoid;
    out[13] = __atomic_load_n(&pc.same_cpu, __ATOMIC_RELAXED);
    out[14] = __atomic_load_n(&pc.moved, __ATOMIC_RELAXED);
}

#endif /* FRAMERPC_PARCOPY_H */
