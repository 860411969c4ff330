/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * tsm_host_uapi.h - what user space sees of /dev/tsm (linux/module/tsm_host.c).
 *
 * The user-space driver (linux/driver, Rust) declares the same layouts and request numbers;
 * its unit tests compile this file with the build machine's C compiler and compare
 * (linux/driver/src/uapi.rs). docs/design.md "Linux host: module and user-space driver".
 */
#ifndef TSM_HOST_UAPI_H
#define TSM_HOST_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define TSM_IOC_MAGIC 0xB7

/* One host call: the register block of tsm-abi's CallRegs in, CallResult out. */
struct tsm_ioc_call {
	__u64 fid;
	__u64 args[6];
	__u64 status;
	__u64 out[4];
};

/* The file's pool: `granules` in, `base` (its first PA) out. */
struct tsm_ioc_pool {
	__u64 granules;
	__u64 base;
};

/* `len` bytes at pool PA `pa` to (write = 0) or from (write = 1) the user buffer `buf`. */
struct tsm_ioc_mem {
	__u64 pa;
	__u64 len;
	__u64 buf;
	__u32 write;
	__u32 reserved;
};

/* The bound edu device. */
struct tsm_ioc_dev_info {
	__u64 bar0;      /* BAR0's PA */
	__u64 bar0_size; /* its length in bytes */
	__u32 cfg_size;  /* bytes of configuration space */
	__u16 rid;       /* requester ID: bus << 8 | device << 3 | function */
	__u16 segment;   /* PCI segment (domain) */
};

/* One configuration-space access of 1, 2 or 4 bytes, aligned to its size. */
struct tsm_ioc_cfg {
	__u32 offset;
	__u32 size;
	__u32 write;
	__u32 value;
};

#define TSM_IOC_CALL       _IOWR(TSM_IOC_MAGIC, 0, struct tsm_ioc_call)
#define TSM_IOC_POOL_ALLOC _IOWR(TSM_IOC_MAGIC, 1, struct tsm_ioc_pool)
#define TSM_IOC_MEM        _IOW(TSM_IOC_MAGIC, 2, struct tsm_ioc_mem)
#define TSM_IOC_DEV_INFO   _IOR(TSM_IOC_MAGIC, 3, struct tsm_ioc_dev_info)
#define TSM_IOC_CFG        _IOWR(TSM_IOC_MAGIC, 4, struct tsm_ioc_cfg)

/*
 * mmap offsets. The pool maps at 0 (user space touches its pages itself only to see whether the
 * TSM blocks it: a delegated page faults the process, never the kernel); BAR0 maps at
 * TSM_MMAP_BAR0, uncached, for the driver's register accesses (a page the TSM lent a TVM faults
 * the process the same way).
 */
#define TSM_MMAP_POOL 0ULL
#define TSM_MMAP_BAR0 (1ULL << 40)

#endif /* TSM_HOST_UAPI_H */
