// SPDX-License-Identifier: GPL-2.0
/*
 * tsm_host - the TSM's host calls for a user-space host driver, and the help that driver needs
 * from a kernel: donatable physically contiguous pages, and QEMU's edu device (PCI 1234:11e8).
 *
 * The driver logic (which calls, in which order, the TDISP/SPDM bytes carried for COMMUNICATE)
 * is the project's Rust in user space (linux/driver); this module only forwards and guards.
 * Everything user space hands in is checked before it reaches the TSM or the hardware:
 *
 * - a call is forwarded only if its function ID is a host call of tsm_abi.h (TSM_HOST_CALLS),
 *   not one that would hand a Linux CPU or the platform to user space (HOST_CPU_START/STOP,
 *   SYSTEM_OFF: PSCI is the kernel's), with the registers past its argument count zero and
 *   every physical-address argument inside this file's own pool (VDEV_MMIO_MAP's page: inside
 *   edu's BAR0), so the TSM is never asked to delegate, read or write memory Linux owns;
 * - the pool's granules this file delegated are tracked from the calls' results: the kernel
 *   never copies to or from one (the access would abort), and on release it gives back to
 *   Linux only granules that are NS again (see pool_release);
 * - configuration space is read and written in aligned 1/2/4-byte accesses inside the
 *   function's space, never its BARs (their addresses are Linux's resource assignment);
 * - BAR0 and the pool map into user space, shared and not executable, so a page the TSM
 *   took from the host faults the process that touched it, never the kernel.
 *
 * docs/design.md "Linux host: module and user-space driver".
 */
#include <linux/bitmap.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#ifdef CONFIG_ARM64
#include <linux/arm-smccc.h>
#endif
#ifdef CONFIG_X86_64
#include <asm/asm.h>
#endif

#include "tsm_abi.h"
#include "tsm_host_uapi.h"

#if !defined(CONFIG_ARM64) && !defined(CONFIG_X86_64)
#error "the TSM runs under arm64 and x86_64 hosts only"
#endif

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8

/* One pool is one buddy allocation, split: at most the largest order the allocator serves. */
#define POOL_MAX_GRANULES (1ULL << (MAX_ORDER - 1))

struct host_call {
	u32 fid;
	u8 nargs;
	u8 pa_args;
};

#define HOST_CALL(name, id, n, mask) { .fid = (id), .nargs = (n), .pa_args = (mask) },
static const struct host_call host_calls[] = { TSM_HOST_CALLS(HOST_CALL) };

/* Whether a TSM granted ABI 1.0 at load; without one no call is issued. */
static bool tsm_present;

struct pool {
	struct page *pages;
	phys_addr_t base;
	u64 granules;
	/* Granules this file delegated and has not undelegated. */
	unsigned long *secure;
};

struct session {
	/* Serialises this file's calls with its pool accesses and the tracking of delegation. */
	struct mutex lock;
	struct pool pool;
};

static DEFINE_MUTEX(edu_lock);
static struct pci_dev *edu_dev;

/*
 * Issues one call through the conduit; false when there is none to take it (no TSM, nor any
 * hypervisor, below this kernel).
 */
#ifdef CONFIG_ARM64
static bool raw_call(u64 fid, const u64 args[TSM_MAX_ARGS], u64 *status,
		     u64 out[TSM_MAX_RESULTS])
{
	struct arm_smccc_1_2_regs a = {
		.a0 = fid, .a1 = args[0], .a2 = args[1], .a3 = args[2],
		.a4 = args[3], .a5 = args[4], .a6 = args[5],
	};
	struct arm_smccc_1_2_regs r;

	/*
	 * SMCCC below 1.1 (QEMU's own PSCI, no EL2) promises nothing for an unknown function
	 * ID: an HVC or SMC nobody takes is an undefined instruction. From 1.1 on, an unknown ID
	 * returns NOT_SUPPORTED, which is not a TSM status.
	 */
	switch (arm_smccc_1_1_get_conduit()) {
	case SMCCC_CONDUIT_HVC:
		arm_smccc_1_2_hvc(&a, &r);
		break;
	case SMCCC_CONDUIT_SMC:
		arm_smccc_1_2_smc(&a, &r);
		break;
	default:
		return false;
	}
	*status = r.a0;
	out[0] = r.a1;
	out[1] = r.a2;
	out[2] = r.a3;
	out[3] = r.a4;
	return true;
}
#else
static bool raw_call(u64 fid, const u64 args[TSM_MAX_ARGS], u64 *status,
		     u64 out[TSM_MAX_RESULTS])
{
	register u64 r10 asm("r10") = args[3];
	register u64 r8 asm("r8") = args[4];
	register u64 r9 asm("r9") = args[5];
	u64 rax = fid, rdi = args[0], rsi = args[1], rdx = args[2];

	/*
	 * Outside an SVM guest (or as a guest of a hypervisor that does not intercept it)
	 * VMMCALL raises #UD; the exception table resumes after it with rax untouched. A TSM
	 * status never equals a function ID (its bits above 15 are zero), so an unchanged rax
	 * says no one took the call.
	 */
	asm volatile("1: vmmcall\n2:\n" _ASM_EXTABLE(1b, 2b)
		     : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r10)
		     : "r"(r8), "r"(r9)
		     : "memory");
	if (rax == fid)
		return false;
	*status = rax;
	out[0] = rdi;
	out[1] = rsi;
	out[2] = rdx;
	out[3] = r10;
	return true;
}
#endif

static bool tsm_answers(void)
{
	u64 args[TSM_MAX_ARGS] = {
		TSM_ABI_VERSION(TSM_ABI_VERSION_MAJOR, TSM_ABI_VERSION_MINOR)
	};
	u64 status, out[TSM_MAX_RESULTS];

	if (!raw_call(TSM_CALL_VERSION, args, &status, out))
		return false;
	return status == TSM_STATUS_SUCCESS && out[0] == args[0];
}

static const struct host_call *host_call_of(u64 fid)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(host_calls); i++)
		if (host_calls[i].fid == fid)
			return &host_calls[i];
	return NULL;
}

/* The kernel's own: a CPU handed to user space, or the platform switched off under Linux. */
static bool kernel_only(u32 fid)
{
	return fid == TSM_CALL_HOST_CPU_START || fid == TSM_CALL_HOST_CPU_STOP ||
	       fid == TSM_CALL_SYSTEM_OFF;
}

static bool in_pool(const struct pool *p, u64 pa)
{
	return p->granules && pa >= p->base &&
	       (pa - p->base) >> TSM_GRANULE_SHIFT < p->granules;
}

static bool in_bar0(u64 pa)
{
	bool in;

	mutex_lock(&edu_lock);
	in = edu_dev && pci_resource_len(edu_dev, 0) &&
	     pa >= pci_resource_start(edu_dev, 0) && pa <= pci_resource_end(edu_dev, 0);
	mutex_unlock(&edu_lock);
	return in;
}

/* Whether argument `i` of `hc`, a physical address, names memory this file may name. */
static bool may_name(const struct pool *p, const struct host_call *hc, unsigned int i, u64 pa)
{
	if (hc->fid == TSM_CALL_VDEV_MMIO_MAP && i == 2)
		return in_bar0(pa);
	/* PDEV_CONNECT without SPDM passes no evidence granule. */
	if (hc->fid == TSM_CALL_PDEV_CONNECT && i == 2 && pa == 0)
		return true;
	return in_pool(p, pa);
}

static long do_call(struct session *s, struct tsm_ioc_call __user *uarg)
{
	struct tsm_ioc_call c;
	const struct host_call *hc;
	struct pool *p = &s->pool;
	unsigned int i;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	hc = host_call_of(c.fid);
	if (!hc)
		return -EINVAL;
	if (kernel_only(hc->fid))
		return -EPERM;
	for (i = hc->nargs; i < TSM_MAX_ARGS; i++)
		if (c.args[i])
			return -EINVAL;
	for (i = 0; i < hc->nargs; i++)
		if ((hc->pa_args & (1U << i)) && !may_name(p, hc, i, c.args[i]))
			return -EACCES;
	/* MAP_PRIVATE's source is a PA or NO_SOURCE, hence a plain word in the header's mask. */
	if (hc->fid == TSM_CALL_MAP_PRIVATE && c.args[3] != TSM_NO_SOURCE &&
	    !in_pool(p, c.args[3]))
		return -EACCES;
	if (!tsm_present)
		return -ENODEV;

	if (!raw_call(hc->fid, c.args, &c.status, c.out))
		return -ENODEV;
	if (c.status == TSM_STATUS_SUCCESS) {
		u64 g = (c.args[0] - p->base) >> TSM_GRANULE_SHIFT;

		if (hc->fid == TSM_CALL_GRANULE_DELEGATE)
			set_bit(g, p->secure);
		else if (hc->fid == TSM_CALL_GRANULE_UNDELEGATE)
			clear_bit(g, p->secure);
	}
	if (copy_to_user(&uarg->status, &c.status, sizeof(c.status) + sizeof(c.out)))
		return -EFAULT;
	return 0;
}

static long pool_alloc(struct session *s, struct tsm_ioc_pool __user *uarg)
{
	struct tsm_ioc_pool req;
	struct pool *p = &s->pool;
	unsigned int order;
	struct page *pages;
	u64 i;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.granules == 0 || req.granules > POOL_MAX_GRANULES)
		return -EINVAL;
	if (p->granules)
		return -EBUSY;
	p->secure = bitmap_zalloc(req.granules, GFP_KERNEL);
	if (!p->secure)
		return -ENOMEM;
	order = get_order(req.granules << PAGE_SHIFT);
	pages = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN, order);
	if (!pages) {
		bitmap_free(p->secure);
		p->secure = NULL;
		return -ENOMEM;
	}
	/* Page by page from here, so release can keep the ones the TSM still holds. */
	split_page(pages, order);
	for (i = req.granules; i < (1ULL << order); i++)
		__free_page(pages + i);
	p->pages = pages;
	p->base = page_to_phys(pages);
	p->granules = req.granules;
	req.base = p->base;
	if (copy_to_user(uarg, &req, sizeof(req)))
		return -EFAULT;
	return 0;
}

/*
 * Gives the pool back to Linux. A granule still delegated is undelegated first; one the TSM
 * refuses to give back (it still holds an object or a TVM's page: the driver died before its
 * teardown) is never freed, so Linux cannot hand secure memory to anyone: it stays out of
 * the allocator until reboot, and the log says how many.
 */
static void pool_release(struct pool *p)
{
	u64 args[TSM_MAX_ARGS] = { 0 };
	u64 status, out[TSM_MAX_RESULTS];
	u64 i, kept = 0;

	for (i = 0; i < p->granules; i++) {
		if (test_bit(i, p->secure)) {
			args[0] = p->base + (i << TSM_GRANULE_SHIFT);
			if (!raw_call(TSM_CALL_GRANULE_UNDELEGATE, args, &status, out) ||
			    status != TSM_STATUS_SUCCESS) {
				kept++;
				continue;
			}
		}
		__free_page(p->pages + i);
	}
	if (kept)
		pr_warn("tsm_host: %llu pool granules still owned by the TSM stay out of Linux's allocator\n",
			kept);
	bitmap_free(p->secure);
	p->granules = 0;
}

static long pool_access(struct session *s, struct tsm_ioc_mem __user *uarg)
{
	struct tsm_ioc_mem m;
	struct pool *p = &s->pool;
	u64 first, last, end;
	void *k;

	if (copy_from_user(&m, uarg, sizeof(m)))
		return -EFAULT;
	if (m.len == 0 || m.write > 1 || m.reserved)
		return -EINVAL;
	if (check_add_overflow(m.pa, m.len, &end) || !in_pool(p, m.pa) || !in_pool(p, end - 1))
		return -EINVAL;
	first = (m.pa - p->base) >> TSM_GRANULE_SHIFT;
	last = (end - 1 - p->base) >> TSM_GRANULE_SHIFT;
	/* A delegated granule would abort the kernel's access: refuse before touching any. */
	if (find_next_bit(p->secure, last + 1, first) <= last)
		return -EPERM;
	/* One buddy block: contiguous in the linear map. */
	k = page_address(p->pages) + (m.pa - p->base);
	if (m.write ? copy_from_user(k, u64_to_user_ptr(m.buf), m.len) :
		      copy_to_user(u64_to_user_ptr(m.buf), k, m.len))
		return -EFAULT;
	return 0;
}

static long edu_info(struct tsm_ioc_dev_info __user *uarg)
{
	struct tsm_ioc_dev_info d = { 0 };

	mutex_lock(&edu_lock);
	if (!edu_dev) {
		mutex_unlock(&edu_lock);
		return -ENODEV;
	}
	d.bar0 = pci_resource_start(edu_dev, 0);
	d.bar0_size = pci_resource_len(edu_dev, 0);
	d.cfg_size = edu_dev->cfg_size;
	d.rid = PCI_DEVID(edu_dev->bus->number, edu_dev->devfn);
	d.segment = pci_domain_nr(edu_dev->bus);
	mutex_unlock(&edu_lock);
	return copy_to_user(uarg, &d, sizeof(d)) ? -EFAULT : 0;
}

/* The BARs and the expansion ROM: addresses Linux assigned and keeps. */
static bool cfg_protected(u32 offset, u32 size)
{
	return (offset < PCI_BASE_ADDRESS_5 + 4 && offset + size > PCI_BASE_ADDRESS_0) ||
	       (offset < PCI_ROM_ADDRESS + 4 && offset + size > PCI_ROM_ADDRESS);
}

static long cfg_access(struct tsm_ioc_cfg __user *uarg)
{
	struct tsm_ioc_cfg c;
	long err = 0;
	int rc = 0;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if ((c.size != 1 && c.size != 2 && c.size != 4) || c.offset % c.size || c.write > 1)
		return -EINVAL;
	if (c.write && c.size < 4 && c.value >> (8 * c.size))
		return -EINVAL;
	if (c.write && cfg_protected(c.offset, c.size))
		return -EPERM;
	mutex_lock(&edu_lock);
	if (!edu_dev) {
		err = -ENODEV;
	} else if (c.offset > edu_dev->cfg_size - c.size) {
		err = -EINVAL;
	} else if (c.write) {
		if (c.size == 1)
			rc = pci_write_config_byte(edu_dev, c.offset, c.value);
		else if (c.size == 2)
			rc = pci_write_config_word(edu_dev, c.offset, c.value);
		else
			rc = pci_write_config_dword(edu_dev, c.offset, c.value);
	} else {
		u8 b;
		u16 w;

		if (c.size == 1) {
			rc = pci_read_config_byte(edu_dev, c.offset, &b);
			c.value = b;
		} else if (c.size == 2) {
			rc = pci_read_config_word(edu_dev, c.offset, &w);
			c.value = w;
		} else {
			rc = pci_read_config_dword(edu_dev, c.offset, &c.value);
		}
	}
	mutex_unlock(&edu_lock);
	if (err)
		return err;
	if (rc)
		return -EIO;
	return copy_to_user(uarg, &c, sizeof(c)) ? -EFAULT : 0;
}

static long tsm_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct session *s = f->private_data;
	void __user *uarg = (void __user *)arg;
	long ret;

	switch (cmd) {
	case TSM_IOC_DEV_INFO:
		return edu_info(uarg);
	case TSM_IOC_CFG:
		return cfg_access(uarg);
	case TSM_IOC_CALL:
	case TSM_IOC_POOL_ALLOC:
	case TSM_IOC_MEM:
		break;
	default:
		return -ENOTTY;
	}
	mutex_lock(&s->lock);
	if (cmd == TSM_IOC_CALL)
		ret = do_call(s, uarg);
	else if (cmd == TSM_IOC_POOL_ALLOC)
		ret = pool_alloc(s, uarg);
	else
		ret = pool_access(s, uarg);
	mutex_unlock(&s->lock);
	return ret;
}

static int tsm_mmap(struct file *f, struct vm_area_struct *vma)
{
	struct session *s = f->private_data;
	u64 offset = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 size = vma->vm_end - vma->vm_start;
	int err = -EINVAL;

	if (!(vma->vm_flags & VM_SHARED) || (vma->vm_flags & VM_EXEC))
		return -EINVAL;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_clear(vma, VM_MAYEXEC);
#else
	vma->vm_flags &= ~VM_MAYEXEC;
#endif
	if (offset == TSM_MMAP_POOL) {
		mutex_lock(&s->lock);
		if (s->pool.granules && size <= s->pool.granules << PAGE_SHIFT)
			err = remap_pfn_range(vma, vma->vm_start, PHYS_PFN(s->pool.base), size,
					      vma->vm_page_prot);
		mutex_unlock(&s->lock);
	} else if (offset == TSM_MMAP_BAR0) {
		mutex_lock(&edu_lock);
		if (edu_dev && size <= PAGE_ALIGN(pci_resource_len(edu_dev, 0)))
			err = io_remap_pfn_range(vma, vma->vm_start,
						 PHYS_PFN(pci_resource_start(edu_dev, 0)), size,
						 pgprot_noncached(vma->vm_page_prot));
		mutex_unlock(&edu_lock);
	}
	return err;
}

static int tsm_open(struct inode *inode, struct file *f)
{
	struct session *s = kzalloc(sizeof(*s), GFP_KERNEL);

	if (!s)
		return -ENOMEM;
	mutex_init(&s->lock);
	f->private_data = s;
	return 0;
}

/* Runs once no mapping of the file is left (each holds a reference to it). */
static int tsm_release(struct inode *inode, struct file *f)
{
	struct session *s = f->private_data;

	if (s->pool.granules)
		pool_release(&s->pool);
	kfree(s);
	return 0;
}

static const struct file_operations tsm_fops = {
	.owner = THIS_MODULE,
	.open = tsm_open,
	.release = tsm_release,
	.unlocked_ioctl = tsm_ioctl,
	.mmap = tsm_mmap,
	.llseek = noop_llseek,
};

static struct miscdevice tsm_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "tsm",
	.fops = &tsm_fops,
	.mode = 0600,
};

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	int err;

	mutex_lock(&edu_lock);
	/* The user-space driver drives one edu: a second stays with no driver. */
	if (edu_dev) {
		err = -EBUSY;
		goto out;
	}
	err = pcim_enable_device(pdev);
	if (!err)
		err = pci_request_region(pdev, 0, "tsm_host");
	if (err)
		goto out;
	edu_dev = pdev;
	dev_info(&pdev->dev, "edu bound: requester ID %04x:%02x:%02x.%x, BAR0 %pR\n",
		 pci_domain_nr(pdev->bus), pdev->bus->number, PCI_SLOT(pdev->devfn),
		 PCI_FUNC(pdev->devfn), &pdev->resource[0]);
out:
	mutex_unlock(&edu_lock);
	return err;
}

static void edu_remove(struct pci_dev *pdev)
{
	mutex_lock(&edu_lock);
	if (edu_dev == pdev)
		edu_dev = NULL;
	mutex_unlock(&edu_lock);
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DEVICE(EDU_VENDOR, EDU_DEVICE) },
	{ 0 }
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static struct pci_driver edu_driver = {
	.name = "tsm_host_edu",
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
	/* BAR0 may be mapped into user space: no unbinding from sysfs under it. */
	.driver.suppress_bind_attrs = true,
};

static int __init tsm_host_init(void)
{
	int err;

	BUILD_BUG_ON(PAGE_SIZE != TSM_GRANULE_SIZE);
	tsm_present = tsm_answers();
	if (tsm_present)
		pr_info("tsm_host: TSM ABI %d.%d granted\n", TSM_ABI_VERSION_MAJOR,
			TSM_ABI_VERSION_MINOR);
	else
		pr_info("tsm_host: no TSM below this kernel: host calls will fail with ENODEV\n");
	err = misc_register(&tsm_misc);
	if (err)
		return err;
	err = pci_register_driver(&edu_driver);
	if (err)
		misc_deregister(&tsm_misc);
	return err;
}

static void __exit tsm_host_exit(void)
{
	pci_unregister_driver(&edu_driver);
	misc_deregister(&tsm_misc);
}

module_init(tsm_host_init);
module_exit(tsm_host_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("TSM host calls, donatable pages and the edu device for a user-space host driver");
