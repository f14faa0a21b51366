/*
 * LD_PRELOAD shim for Debian 12's user-mode-linux (Linux 6.1) on hosts with
 * AVX-512 or AMX: tests/legacy/uml.py builds it with gcc and preloads it into
 * linux.uml.  See the comment on XSTATE_SHIM in uml.py for the why.
 *
 * UML 6.1 saves and restores a guest thread's FPU state with
 * PTRACE_GETREGSET / PTRACE_SETREGSET (NT_X86_XSTATE) and a buffer of
 * compile-time size (struct _xstate, 832 bytes: x87/SSE, XSAVE header, the
 * upper halves of the AVX registers).  The host kernel fills a short buffer
 * on GETREGSET, but refuses SETREGSET with EFAULT unless the buffer is exactly
 * the host's XSAVE size (2.7 KiB with AVX-512, 11 KiB with AMX), so the
 * guest's init dies at once.
 *
 * This interposes ptrace(): for those two requests with a short buffer it
 * keeps a full-size copy per UML buffer (each guest thread's registers live
 * in a buffer of their own, so the buffer's address names the thread).
 * GETREGSET reads the full state into that copy and hands UML its first
 * bytes; SETREGSET lays UML's bytes (which UML may have changed: signal
 * delivery, sigreturn, a new thread's copied registers) over the copy and
 * writes the full state back.  The AVX-512 parts are thus restored as they
 * were read; a buffer never read before (a new thread) gets them zeroed.
 * Every other request goes to glibc's ptrace unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

struct copy {
	void *key;		/* UML's buffer */
	struct copy *next;
	unsigned char state[];	/* host_size bytes */
};

#define BUCKETS 4096
static struct copy *table[BUCKETS];
static size_t host_size;	/* 0: not known yet */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static long raw_ptrace(long request, long pid, void *addr, void *data)
{
	return syscall(SYS_ptrace, request, pid, addr, data);
}

/* The host's XSAVE size: what GETREGSET leaves in iov_len for a big buffer. */
static size_t xstate_size(pid_t pid)
{
	if (host_size == 0) {
		size_t len = 1 << 16;
		void *buf = malloc(len);
		struct iovec iov = { buf, len };

		if (buf && raw_ptrace(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov) == 0)
			host_size = iov.iov_len;
		free(buf);
	}
	return host_size;
}

static struct copy *copy_for(void *key, size_t size)
{
	size_t bucket = ((uintptr_t)key >> 4) % BUCKETS;
	struct copy *c;

	for (c = table[bucket]; c; c = c->next)
		if (c->key == key)
			return c;
	c = calloc(1, sizeof(*c) + size);
	if (!c)
		return NULL;
	c->key = key;
	c->next = table[bucket];
	table[bucket] = c;
	return c;
}

static long xstate(int request, pid_t pid, struct iovec *iov)
{
	size_t size = xstate_size(pid);
	struct iovec full;
	struct copy *c;
	long rc;

	if (size == 0 || iov->iov_len >= size)
		return raw_ptrace(request, pid, (void *)NT_X86_XSTATE, iov);
	c = copy_for(iov->iov_base, size);
	if (!c) {
		errno = ENOMEM;
		return -1;
	}
	full.iov_base = c->state;
	full.iov_len = size;
	if (request == PTRACE_GETREGSET) {
		rc = raw_ptrace(request, pid, (void *)NT_X86_XSTATE, &full);
		if (rc == 0)
			memcpy(iov->iov_base, c->state, iov->iov_len);
		return rc;
	}
	memcpy(c->state, iov->iov_base, iov->iov_len);
	return raw_ptrace(request, pid, (void *)NT_X86_XSTATE, &full);
}

long ptrace(enum __ptrace_request request, ...)
{
	static long (*real)(enum __ptrace_request, ...);
	va_list ap;
	pid_t pid;
	void *addr, *data;
	long rc;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);

	if ((request == PTRACE_GETREGSET || request == PTRACE_SETREGSET)
	    && (uintptr_t)addr == NT_X86_XSTATE && data) {
		pthread_mutex_lock(&lock);
		rc = xstate(request, pid, data);
		pthread_mutex_unlock(&lock);
		return rc;
	}
	if (!real)
		real = (long (*)(enum __ptrace_request, ...))dlsym(RTLD_NEXT, "ptrace");
	return real(request, pid, addr, data);
}
