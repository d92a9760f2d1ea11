// Watchdog of the CPU emulator: a thread that spins on plain memory. A spin-wait on an
// atomic or __nanosleep yields (runtime.cpp), but a loop over a volatile (or plain)
// load never calls into the runtime, so the scheduler cannot see it. A helper thread
// (one per kernel library, started at its first launch) looks every kTickNs at the
// launch's activity: thread starts and exits, barriers, collectives, atomics. When nothing has happened for two looks, it signals the launching thread,
// and again at every look that sees nothing new; the handler compares the interrupted
// registers (general and SSE) with those of the previous signal. The same registers
// (the program counter within a small loop) with no activity in between mean that the
// thread loops without changing anything it could exit on: runtime.cpp then lets the
// other threads of the block run (the flag may be theirs to set, as on a GPU) or, when
// none can, ends the launch as a deadlock. A thread that computes for long changes its
// registers and is left alone; so is a spin that counts its turns. The default mode
// pays a flag test per launch and a counter increment per block and spin check; the
// helper sleeps.
#include "emu_runtime.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#if defined(__x86_64__)
namespace {

constexpr long kTickNs = 20 * 1000 * 1000;       // during a launch
constexpr long kIdleTickNs = 200 * 1000 * 1000;  // between launches
constexpr int kQuietTicks = 2;   // looks without activity before the first signal
constexpr int kLoopBytes = 256;  // the program counters of one small loop

int signal_number() { return SIGRTMAX - 6; }  // unused by Python, glibc and MPI libraries

pthread_t g_launcher;          // the thread running the current launch
bool g_handler_installed;      // inherited by a forked child
bool g_helper_running;         // not inherited: a child starts its own helper
struct sigaction g_previous;   // another library's watchdog (each library has its own): chained

// The interrupted registers at the last signal, and the activity then.
greg_t g_regs[NGREG];
_libc_xmmreg g_xmm[16];  // a loop may keep its state in SSE registers only (a float iteration)
bool g_have_regs;
unsigned long long g_regs_activity;

void* watch(void*) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // process signals go to Python's threads
    unsigned long long last = ~0ull;
    int quiet = 0;
    for (;;) {
        bool in_launch = __emu_watch_in_launch();
        timespec tick = {0, in_launch ? kTickNs : kIdleTickNs};
        nanosleep(&tick, nullptr);
        if (!in_launch) {
            quiet = 0;
            last = ~0ull;
            continue;
        }
        unsigned long long now = __emu_watch_activity();
        if (now != last) {
            last = now;
            quiet = 0;
        } else if (++quiet >= kQuietTicks) {  // and at every quiet look after: two signals compare
            pthread_kill(g_launcher, signal_number());
        }
    }
    return nullptr;
}

bool same_loop(const greg_t* a, const greg_t* b, const _libc_xmmreg* xmm) {
    if (!xmm || memcmp(xmm, g_xmm, sizeof g_xmm) != 0) return false;
    for (int r = 0; r < NGREG; ++r) {
        if (r == REG_RIP) {
            long long d = (long long)a[r] - (long long)b[r];
            if (d < -kLoopBytes || d > kLoopBytes) return false;
        } else if (r != REG_EFL && r != REG_ERR && r != REG_TRAPNO && r != REG_OLDMASK && r != REG_CR2 &&
                   a[r] != b[r]) {
            return false;
        }
    }
    return true;
}

void on_signal(int sig, siginfo_t* info, void* context) {
    if (!__emu_watch_in_launch() || !pthread_equal(pthread_self(), g_launcher)) {
        // Not this library's launch: another library's watchdog may have sent it.
        if ((g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_sigaction)
            g_previous.sa_sigaction(sig, info, context);
        else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN)
            g_previous.sa_handler(sig);
        return;
    }
    int saved_errno = errno;
    const mcontext_t& machine = ((ucontext_t*)context)->uc_mcontext;
    const greg_t* regs = machine.gregs;
    const _libc_xmmreg* xmm = machine.fpregs ? machine.fpregs->_xmm : nullptr;
    unsigned long long activity = __emu_watch_activity();
    bool spin = g_have_regs && activity == g_regs_activity && same_loop(regs, g_regs, xmm);
    memcpy(g_regs, regs, sizeof g_regs);
    if (xmm) memcpy(g_xmm, xmm, sizeof g_xmm);
    g_have_regs = !spin;  // after a yield the thread is looked at afresh
    g_regs_activity = activity;
    if (spin) __emu_watch_spin((const void*)regs[REG_RIP]);  // returns when the thread may go on
    errno = saved_errno;
}

void forked_child() { g_helper_running = false; }

}  // namespace

void __emu_watch_launch() {
    g_launcher = pthread_self();
    g_have_regs = false;
    if (__builtin_expect(g_helper_running, 1)) return;
    g_helper_running = true;
    if (!g_handler_installed) {
        g_handler_installed = true;
        pthread_atfork(nullptr, nullptr, forked_child);
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = on_signal;
        // SA_NODEFER: the handler may switch to another fiber and stay there for a
        // while; the signal must not stay blocked meanwhile.
        action.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        sigaction(signal_number(), &action, &g_previous);
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t helper;
    pthread_create(&helper, &attr, watch, nullptr);
    pthread_attr_destroy(&attr);
}
#else
void __emu_watch_launch() {}  // other architectures: a volatile spin-wait is seen under memcheck only
#endif
