/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * tsm_abi.h - the TSM host and guest ABI for C callers.
 *
 * GENERATED from the tsm-abi crate by abi/tests/c_header.rs: do not edit.
 * Regenerate with: TSM_BLESS=1 cargo test -p tsm-abi --test c_header
 * The specification is docs/abi.md.
 */
#ifndef TSM_ABI_H
#define TSM_ABI_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdint.h>
#endif

/* ---- ABI version ---- */

#define TSM_ABI_VERSION_MAJOR                            1
#define TSM_ABI_VERSION_MINOR                            0
#define TSM_ABI_VERSION(major, minor)                    ((uint64_t)(major) << 16 | (uint64_t)(minor))

/* ---- call IDs (SMCCC fast SMC64, owner 6; x86_64: the same value in rax) ---- */

#define TSM_FID_BASE                                     0xC6000000U
#define TSM_HOST_BASE                                    0x0100
#define TSM_GUEST_BASE                                   0x0200
#define TSM_MAX_ARGS                                     6
#define TSM_MAX_RESULTS                                  4

#define TSM_CALL_VERSION                                 0xC6000100U /* host, 1 args, 3 results */
#define TSM_CALL_FEATURES                                0xC6000101U /* host, 1 args, 1 results */
#define TSM_CALL_CONSOLE_WRITE                           0xC6000102U /* host, 2 args, 0 results */
#define TSM_CALL_SYSTEM_OFF                              0xC6000103U /* host, 1 args, 0 results */
#define TSM_CALL_HOST_CPU_START                          0xC6000104U /* host, 3 args, 0 results */
#define TSM_CALL_HOST_CPU_STOP                           0xC6000105U /* host, 0 args, 0 results */
#define TSM_CALL_GRANULE_DELEGATE                        0xC6000110U /* host, 1 args, 0 results */
#define TSM_CALL_GRANULE_UNDELEGATE                      0xC6000111U /* host, 1 args, 0 results */
#define TSM_CALL_TVM_CREATE                              0xC6000120U /* host, 3 args, 0 results */
#define TSM_CALL_TVM_ACTIVATE                            0xC6000121U /* host, 1 args, 0 results */
#define TSM_CALL_TVM_DESTROY                             0xC6000122U /* host, 1 args, 0 results */
#define TSM_CALL_TABLE_CREATE                            0xC6000123U /* host, 4 args, 0 results */
#define TSM_CALL_TABLE_DESTROY                           0xC6000124U /* host, 3 args, 1 results */
#define TSM_CALL_MAP_PRIVATE                             0xC6000125U /* host, 5 args, 0 results */
#define TSM_CALL_MAP_SHARED                              0xC6000126U /* host, 4 args, 0 results */
#define TSM_CALL_UNMAP                                   0xC6000127U /* host, 2 args, 1 results */
#define TSM_CALL_VCPU_CREATE                             0xC6000130U /* host, 4 args, 0 results */
#define TSM_CALL_VCPU_RUN                                0xC6000131U /* host, 2 args, 1 results */
#define TSM_CALL_VCPU_DESTROY                            0xC6000132U /* host, 1 args, 0 results */
#define TSM_CALL_PDEV_CREATE                             0xC6000140U /* host, 2 args, 0 results */
#define TSM_CALL_PDEV_CONNECT                            0xC6000141U /* host, 3 args, 2 results */
#define TSM_CALL_PDEV_STOP                               0xC6000142U /* host, 1 args, 0 results */
#define TSM_CALL_PDEV_DESTROY                            0xC6000143U /* host, 1 args, 0 results */
#define TSM_CALL_PDEV_DISCONNECT                         0xC6000144U /* host, 2 args, 2 results */
#define TSM_CALL_PDEV_KEY_UPDATE                         0xC6000145U /* host, 2 args, 2 results */
#define TSM_CALL_VIOMMU_CREATE                           0xC6000150U /* host, 4 args, 0 results */
#define TSM_CALL_VIOMMU_DESTROY                          0xC6000151U /* host, 1 args, 0 results */
#define TSM_CALL_VDEV_CREATE                             0xC6000160U /* host, 4 args, 0 results */
#define TSM_CALL_VDEV_BIND                               0xC6000161U /* host, 2 args, 2 results */
#define TSM_CALL_VDEV_UNBIND                             0xC6000162U /* host, 2 args, 2 results */
#define TSM_CALL_VDEV_GET_STATE                          0xC6000163U /* host, 1 args, 2 results */
#define TSM_CALL_VDEV_DESTROY                            0xC6000164U /* host, 1 args, 0 results */
#define TSM_CALL_VDEV_DMA_TABLE                          0xC6000165U /* host, 2 args, 0 results */
#define TSM_CALL_VDEV_MMIO_MAP                           0xC6000166U /* host, 3 args, 0 results */
#define TSM_CALL_VDEV_MMIO_UNMAP                         0xC6000167U /* host, 2 args, 1 results */
#define TSM_CALL_COMMUNICATE                             0xC6000170U /* host, 2 args, 2 results */
#define TSM_CALL_OP_CANCEL                               0xC6000171U /* host, 1 args, 0 results */
#define TSM_CALL_EVENT_READ                              0xC6000180U /* host, 2 args, 2 results */
#define TSM_CALL_TEST_DMA_INJECT                         0xC60001F0U /* host, 5 args, 1 results */
#define TSM_CALL_G_VERSION                               0xC6000200U /* guest, 1 args, 3 results */
#define TSM_CALL_G_CONSOLE_WRITE                         0xC6000201U /* guest, 2 args, 0 results */
#define TSM_CALL_G_EXIT                                  0xC6000202U /* guest, 1 args, 0 results */
#define TSM_CALL_G_TVM_INFO                              0xC6000203U /* guest, 0 args, 2 results */
#define TSM_CALL_G_VDEV_INFO                             0xC6000210U /* guest, 2 args, 0 results */
#define TSM_CALL_G_VDEV_REPORT                           0xC6000211U /* guest, 4 args, 2 results */
#define TSM_CALL_G_VDEV_ACCEPT                           0xC6000212U /* guest, 2 args, 0 results */
#define TSM_CALL_G_VDEV_STOP                             0xC6000213U /* guest, 1 args, 0 results */
#define TSM_CALL_G_VDEV_CERT_CHAIN                       0xC6000214U /* guest, 4 args, 2 results */
#define TSM_CALL_G_VDEV_MEASUREMENTS                     0xC6000215U /* guest, 4 args, 2 results */
#define TSM_CALL_G_VDEV_MMIO_VALIDATE                    0xC6000216U /* guest, 4 args, 0 results */
#define TSM_CALL_G_S1_ATTACH                             0xC6000220U /* guest, 4 args, 0 results */
#define TSM_CALL_G_S1_DETACH                             0xC6000221U /* guest, 2 args, 0 results */
#define TSM_CALL_G_S1_INVALIDATE                         0xC6000222U /* guest, 4 args, 0 results */
#define TSM_CALL_G_EVENT_READ                            0xC6000230U /* guest, 2 args, 2 results */

/*
 * Every host call as X(name, function ID, argument count, mask of the arguments that are
 * physical addresses: bit i for argument i), for a host kernel that forwards calls
 * from user space and checks what they name.
 */
#define TSM_HOST_CALLS(X) \
	X(VERSION, 0xC6000100U, 1, 0x00) \
	X(FEATURES, 0xC6000101U, 1, 0x00) \
	X(CONSOLE_WRITE, 0xC6000102U, 2, 0x01) \
	X(SYSTEM_OFF, 0xC6000103U, 1, 0x00) \
	X(HOST_CPU_START, 0xC6000104U, 3, 0x02) \
	X(HOST_CPU_STOP, 0xC6000105U, 0, 0x00) \
	X(GRANULE_DELEGATE, 0xC6000110U, 1, 0x01) \
	X(GRANULE_UNDELEGATE, 0xC6000111U, 1, 0x01) \
	X(TVM_CREATE, 0xC6000120U, 3, 0x07) \
	X(TVM_ACTIVATE, 0xC6000121U, 1, 0x01) \
	X(TVM_DESTROY, 0xC6000122U, 1, 0x01) \
	X(TABLE_CREATE, 0xC6000123U, 4, 0x09) \
	X(TABLE_DESTROY, 0xC6000124U, 3, 0x01) \
	X(MAP_PRIVATE, 0xC6000125U, 5, 0x05) \
	X(MAP_SHARED, 0xC6000126U, 4, 0x05) \
	X(UNMAP, 0xC6000127U, 2, 0x01) \
	X(VCPU_CREATE, 0xC6000130U, 4, 0x03) \
	X(VCPU_RUN, 0xC6000131U, 2, 0x03) \
	X(VCPU_DESTROY, 0xC6000132U, 1, 0x01) \
	X(PDEV_CREATE, 0xC6000140U, 2, 0x03) \
	X(PDEV_CONNECT, 0xC6000141U, 3, 0x07) \
	X(PDEV_STOP, 0xC6000142U, 1, 0x01) \
	X(PDEV_DESTROY, 0xC6000143U, 1, 0x01) \
	X(PDEV_DISCONNECT, 0xC6000144U, 2, 0x03) \
	X(PDEV_KEY_UPDATE, 0xC6000145U, 2, 0x03) \
	X(VIOMMU_CREATE, 0xC6000150U, 4, 0x03) \
	X(VIOMMU_DESTROY, 0xC6000151U, 1, 0x01) \
	X(VDEV_CREATE, 0xC6000160U, 4, 0x0F) \
	X(VDEV_BIND, 0xC6000161U, 2, 0x03) \
	X(VDEV_UNBIND, 0xC6000162U, 2, 0x03) \
	X(VDEV_GET_STATE, 0xC6000163U, 1, 0x01) \
	X(VDEV_DESTROY, 0xC6000164U, 1, 0x01) \
	X(VDEV_DMA_TABLE, 0xC6000165U, 2, 0x03) \
	X(VDEV_MMIO_MAP, 0xC6000166U, 3, 0x05) \
	X(VDEV_MMIO_UNMAP, 0xC6000167U, 2, 0x01) \
	X(COMMUNICATE, 0xC6000170U, 2, 0x03) \
	X(OP_CANCEL, 0xC6000171U, 1, 0x01) \
	X(EVENT_READ, 0xC6000180U, 2, 0x02) \
	X(TEST_DMA_INJECT, 0xC60001F0U, 5, 0x00)

/* ---- status word: code in bits 7:0, index in bits 15:8 ---- */

#define TSM_STATUS_CODE(status)                          ((uint8_t)((status) & 0xFF))
#define TSM_STATUS_INDEX(status)                         ((uint8_t)(((status) >> 8) & 0xFF))

#define TSM_STATUS_SUCCESS                               0
#define TSM_STATUS_NOT_SUPPORTED                         1
#define TSM_STATUS_INVALID_ARGUMENT                      2
#define TSM_STATUS_MISALIGNED                            3
#define TSM_STATUS_OUT_OF_RANGE                          4
#define TSM_STATUS_GRANULE_STATE                         5
#define TSM_STATUS_BAD_HANDLE                            6
#define TSM_STATUS_OBJECT_STATE                          7
#define TSM_STATUS_IN_USE                                8
#define TSM_STATUS_VERSION_MISMATCH                      9
#define TSM_STATUS_VIOMMU_TYPE_UNKNOWN                   10
#define TSM_STATUS_VIOMMU_TYPE_NOT_TSM                   11
#define TSM_STATUS_BDF_OUT_OF_RANGE                      12
#define TSM_STATUS_BDF_IN_USE                            13
#define TSM_STATUS_TVM_MISMATCH                          14
#define TSM_STATUS_NEEDS_DEVICE_IO                       15
#define TSM_STATUS_DEVICE_ERROR                          16
#define TSM_STATUS_NO_OPERATION                          17
#define TSM_STATUS_TABLE_MISSING                         18
#define TSM_STATUS_ALREADY_MAPPED                        19
#define TSM_STATUS_NOT_MAPPED                            20
#define TSM_STATUS_DENIED                                21
#define TSM_STATUS_EVIDENCE_MISMATCH                     22
#define TSM_STATUS_CAPACITY                              23
#define TSM_STATUS_INVALID_BUFFER                        24
#define TSM_STATUS_EMPTY                                 25
#define TSM_STATUS_CANCELLED                             26
#define TSM_STATUS_DMA_FAULT                             27
#define TSM_STATUS_MMIO_MISMATCH                         28

/* Object kinds (index of TSM_STATUS_IN_USE). */
#define TSM_OBJ_TVM                                      1
#define TSM_OBJ_VCPU                                     2
#define TSM_OBJ_PDEV                                     3
#define TSM_OBJ_VIOMMU                                   4
#define TSM_OBJ_VDEV                                     5
#define TSM_OBJ_TABLE                                    6
#define TSM_OBJ_PRIVATE_PAGE                             7

/* ---- constants ---- */

#define TSM_GRANULE_SIZE                                 4096
#define TSM_GRANULE_SHIFT                                12
#define TSM_NO_SOURCE                                    0xFFFFFFFFFFFFFFFFULL
#define TSM_NO_PASID                                     0xFFFFFFFFFFFFFFFFULL
#define TSM_ALL_PASIDS                                   0xFFFFFFFFFFFFFFFEULL
#define TSM_MAX_PASID                                    0xFFFFFU
#define TSM_HOST_DOMAIN_EVENTS                           0xFFFFFFFFFFFFFFFFULL
#define TSM_COMM_HEADER_SIZE                             64
#define TSM_COMM_PAYLOAD_SIZE                            4032
#define TSM_NONCE_SIZE                                   32
#define TSM_DIGEST_SIZE                                  32

/* ---- vIOMMU types ---- */

#define TSM_VIOMMU_TYPE_BASE                             0x54530000U

/* TSM vIOMMU types (VIOMMU_CREATE argument 3). */
/*
 * No guest stage 1: DMA of the TVM's vdevices is translated by the TVM's address map (stage 2)
 * only. Works on every platform ("NOP" type).
 */
#define TSM_VIOMMU_TYPE_TSM_NO_VIOMMU                    0x54530000U
/*
 * A secure SMMUv3-like vIOMMU: the guest attaches stage-1 tables in the Arm VMSAv8-64 format with a
 * 4 KiB granule.
 */
#define TSM_VIOMMU_TYPE_TSM_SMMUV3                       0x54530001U
/* A secure VT-d-like vIOMMU: the guest attaches x86-64 4-level first-stage tables. */
#define TSM_VIOMMU_TYPE_TSM_VTD                          0x54530002U

/* iommufd types that are not TSM types: refused with TSM_STATUS_VIOMMU_TYPE_NOT_TSM. */
#define TSM_IOMMUFD_VIOMMU_TYPE_DEFAULT                  0
#define TSM_IOMMUFD_VIOMMU_TYPE_ARM_SMMUV3               1
#define TSM_IOMMUFD_VIOMMU_TYPE_TEGRA241_CMDQV           2
#define TSM_IOMMUFD_VIOMMU_TYPE_ARM_REALM_SMMUV3         3

/* Stage-1 formats. */
/* No stage 1 (TSM_NO_VIOMMU). */
#define TSM_S1_FORMAT_NONE                               0
/*
 * Arm VMSAv8-64 translation tables, 4 KiB granule, stage 1 (as an SMMUv3 CD's TTB0), 25..=48-bit
 * input: the walk starts at level 0, 1 or 2 as the input size requires.
 */
#define TSM_S1_FORMAT_ARM_VMSAV8_64_4K                   1
/* x86-64 4-level paging as used by VT-d first-stage translation (48-bit input). */
#define TSM_S1_FORMAT_X86_64_FS_4LEVEL                   2


/* ---- FEATURES registers ---- */

/* Register indices (FEATURES argument 1). */
/* Supported TSM vIOMMU types (ViommuTypes). */
#define TSM_FEAT_VIOMMU_TYPES                            0
/* Supported stage-1 formats (Stage1Formats). */
#define TSM_FEAT_STAGE1_FORMATS                          1
/* Object limits (DeviceLimits). */
#define TSM_FEAT_DEVICE_LIMITS                           2
/* PASID and event-queue limits (QueueLimits). */
#define TSM_FEAT_QUEUE_LIMITS                            3
/* Interface-report and device-message limits (ReportLimits). */
#define TSM_FEAT_REPORT_LIMITS                           4
/* TDISP versions and LOCK flags (TdispFeatures). */
#define TSM_FEAT_TDISP                                   5
/* Granule size and GPA widths (MemoryFeatures). */
#define TSM_FEAT_MEMORY                                  6
/* Link security (SecurityFeatures). */
#define TSM_FEAT_SECURITY                                7
/* Build properties (BuildFlags). */
#define TSM_FEAT_BUILD                                   8
/* The platform IOMMU and vdevice DMA tables (DmaFeatures). */
#define TSM_FEAT_DMA                                     9

/* VIOMMU_TYPES bits. */
#define TSM_FEAT_VIOMMU_TSM_NO_VIOMMU                    0x1ULL
#define TSM_FEAT_VIOMMU_TSM_SMMUV3                       0x2ULL
#define TSM_FEAT_VIOMMU_TSM_VTD                          0x4ULL

/* STAGE1_FORMATS bits. */
#define TSM_FEAT_S1_NONE                                 0x1ULL
#define TSM_FEAT_S1_ARM_VMSAV8_64_4K                     0x2ULL
#define TSM_FEAT_S1_X86_64_FS_4LEVEL                     0x4ULL

/* DEVICE_LIMITS fields. */
#define TSM_DEVICE_LIMITS_VDEVS_PER_TVM_SHIFT            0
#define TSM_DEVICE_LIMITS_VDEVS_PER_TVM_WIDTH            16
#define TSM_DEVICE_LIMITS_VDEVS_PER_PDEV_SHIFT           16
#define TSM_DEVICE_LIMITS_VDEVS_PER_PDEV_WIDTH           16
#define TSM_DEVICE_LIMITS_PDEVS_SHIFT                    32
#define TSM_DEVICE_LIMITS_PDEVS_WIDTH                    16
#define TSM_DEVICE_LIMITS_VIOMMUS_PER_TVM_SHIFT          48
#define TSM_DEVICE_LIMITS_VIOMMUS_PER_TVM_WIDTH          16

/* QUEUE_LIMITS fields. */
#define TSM_QUEUE_LIMITS_PASIDS_PER_VDEV_SHIFT           0
#define TSM_QUEUE_LIMITS_PASIDS_PER_VDEV_WIDTH           32
#define TSM_QUEUE_LIMITS_EVENT_QUEUE_DEPTH_SHIFT         32
#define TSM_QUEUE_LIMITS_EVENT_QUEUE_DEPTH_WIDTH         16
#define TSM_QUEUE_LIMITS_MMIO_PAGES_PER_VDEV_SHIFT       48
#define TSM_QUEUE_LIMITS_MMIO_PAGES_PER_VDEV_WIDTH       16

/* REPORT_LIMITS fields. */
#define TSM_REPORT_LIMITS_MAX_REPORT_LEN_SHIFT           0
#define TSM_REPORT_LIMITS_MAX_REPORT_LEN_WIDTH           32
#define TSM_REPORT_LIMITS_MAX_MESSAGE_LEN_SHIFT          32
#define TSM_REPORT_LIMITS_MAX_MESSAGE_LEN_WIDTH          32

/* TDISP bits: versions (7:0), accepted LOCK flags (31:16). */
#define TSM_FEAT_TDISP_VERSION_1_0                       0x1ULL
#define TSM_FEAT_TDISP_LOCK_NO_FW_UPDATE                 0x10000ULL
#define TSM_FEAT_TDISP_LOCK_SYSTEM_CACHE_LINE_SIZE       0x20000ULL
#define TSM_FEAT_TDISP_LOCK_MSIX                         0x40000ULL
#define TSM_FEAT_TDISP_LOCK_BIND_P2P                     0x80000ULL
#define TSM_FEAT_TDISP_LOCK_ALL_REQUEST_REDIRECT         0x100000ULL

/* MEMORY fields. */
#define TSM_MEMORY_GRANULE_SHIFT_SHIFT                   0
#define TSM_MEMORY_GRANULE_SHIFT_WIDTH                   8
#define TSM_MEMORY_MIN_GPA_BITS_SHIFT                    8
#define TSM_MEMORY_MIN_GPA_BITS_WIDTH                    8
#define TSM_MEMORY_MAX_GPA_BITS_SHIFT                    16
#define TSM_MEMORY_MAX_GPA_BITS_WIDTH                    8

/* SECURITY bits (all 0 until the function is implemented). */
#define TSM_FEAT_SEC_SPDM_SESSION                        0x1ULL
#define TSM_FEAT_SEC_IDE_STREAM                          0x2ULL
#define TSM_FEAT_SEC_DEVICE_MEASUREMENTS                 0x4ULL
#define TSM_FEAT_SEC_ATS                                 0x8ULL
#define TSM_FEAT_SEC_P2P                                 0x10ULL

/* BUILD bits. */
#define TSM_FEAT_BUILD_TEST_DMA_INJECT                   0x1ULL
#define TSM_FEAT_BUILD_DEBUG                             0x2ULL

/* DMA fields. */
#define TSM_DMA_TABLES_PER_VDEV_SHIFT                    0
#define TSM_DMA_TABLES_PER_VDEV_WIDTH                    16
#define TSM_DMA_PAGES_PER_VDEV_SHIFT                     16
#define TSM_DMA_PAGES_PER_VDEV_WIDTH                     32
#define TSM_DMA_VDEVS_SHIFT                              48
#define TSM_DMA_VDEVS_WIDTH                              16


/* ---- flag words ---- */

/* MAP_PRIVATE / MAP_SHARED flags. */
#define TSM_MAP_READ                                     0x1ULL
#define TSM_MAP_WRITE                                    0x2ULL
#define TSM_MAP_EXEC                                     0x4ULL

/* PdevParams.flags. */
#define TSM_PDEV_F_SPDM                                  0x1ULL
#define TSM_PDEV_F_IDE                                   0x2ULL

/* TDISP LOCK_INTERFACE flags (VdevParams.lock_flags). */
#define TSM_LOCK_NO_FW_UPDATE                            0x1ULL
#define TSM_LOCK_SYSTEM_CACHE_LINE_SIZE                  0x2ULL
#define TSM_LOCK_LOCK_MSIX                               0x4ULL
#define TSM_LOCK_BIND_P2P                                0x8ULL
#define TSM_LOCK_ALL_REQUEST_REDIRECT                    0x10ULL

/* VcpuExit.flags. */
#define TSM_EXIT_F_GPA_VALID                             0x1ULL
#define TSM_EXIT_F_WRITE                                 0x2ULL

/* VdevInfo.evidence_flags. */
#define TSM_EVIDENCE_F_DEVICE_AUTHENTICATED              0x1ULL

/* Event record flags. */
#define TSM_EVENT_F_WRITE                                0x1ULL
#define TSM_EVENT_F_T_BIT                                0x2ULL
#define TSM_EVENT_F_PASID_VALID                          0x4ULL
#define TSM_EVENT_F_S1_WALK                              0x8ULL
#define TSM_EVENT_F_GPA_VALID                            0x10ULL

/* TEST_DMA_INJECT flags. */
#define TSM_DMA_T_BIT                                    0x1ULL
#define TSM_DMA_WRITE                                    0x2ULL


/* ---- value sets ---- */

/* PdevParams.interface_id_format. */
/* RID only; bits 31:16 are 0. */
#define TSM_IFID_RID                                     0
/* RID plus segment, with the segment-valid bit set. */
#define TSM_IFID_RID_SEGMENT                             1

/* TVM states. */
/*
 * Created; the host may populate private memory with content (MAP_PRIVATE with a source); vCPUs may
 * not run.
 */
#define TSM_TVM_STATE_NEW                                1
/* Activated; vCPUs may run; private maps are zero-filled only. */
#define TSM_TVM_STATE_ACTIVE                             2

/* PDEV states. */
/* Created; PDEV_CONNECT not yet called. */
#define TSM_PDEV_STATE_NEW                               1
/* The connect operation is in progress (device I/O through COMMUNICATE). */
#define TSM_PDEV_STATE_CONNECTING                        2
/* Connected: TDISP version and capabilities known; vdevices may be created. */
#define TSM_PDEV_STATE_READY                             3
/* Stopped by PDEV_STOP; only PDEV_DESTROY is allowed. */
#define TSM_PDEV_STATE_STOPPED                           4
/*
 * The device failed the connect protocol or the host cancelled it; only PDEV_STOP / PDEV_DESTROY
 * are allowed.
 */
#define TSM_PDEV_STATE_ERROR                             5

/* VDEV states. */
/* TDISP CONFIG_UNLOCKED: T=0 only, through the secure vIOMMU. */
#define TSM_VDEV_STATE_UNLOCKED                          1
/* VDEV_BIND in progress: LOCK_INTERFACE and the report fetch. */
#define TSM_VDEV_STATE_LOCKING                           2
/* TDISP CONFIG_LOCKED: report cached, accept nonce fresh; waiting for the guest. */
#define TSM_VDEV_STATE_LOCKED                            3
/* The guest accepted; START_INTERFACE in progress. */
#define TSM_VDEV_STATE_STARTING                          4
/* TDISP RUN and accepted by the TVM: T=1 DMA allowed. */
#define TSM_VDEV_STATE_RUN                               5
/* VDEV_UNBIND or G_VDEV_STOP in progress: T=1 already off, STOP_INTERFACE pending. */
#define TSM_VDEV_STATE_STOPPING                          6
/*
 * The device or the host broke the protocol, or an operation was cancelled: T=1 off; VDEV_UNBIND
 * (to try STOP_INTERFACE) or VDEV_DESTROY.
 */
#define TSM_VDEV_STATE_ERROR                             7

/* Pending device operations. */
/* No operation pending. */
#define TSM_OP_NONE                                      0
/*
 * PDEV connect: with SPDM the SPDM connect and session (GET_VERSION … FINISH), then TDISP
 * GET_VERSION, GET_CAPABILITIES.
 */
#define TSM_OP_CONNECT                                   1
/* VDEV bind: TDISP LOCK_INTERFACE, GET_DEVICE_INTERFACE_REPORT (all portions). */
#define TSM_OP_BIND                                      2
/* Guest accept: TDISP START_INTERFACE (started by G_VDEV_ACCEPT). */
#define TSM_OP_START                                     3
/* VDEV unbind or guest stop: TDISP STOP_INTERFACE. */
#define TSM_OP_STOP                                      4
/*
 * PDEV key update: SPDM KEY_UPDATE (UpdateAllKeys, then VerifyNewKey) in the session; the PDEV
 * stays READY.
 */
#define TSM_OP_KEY_UPDATE                                5
/*
 * PDEV disconnect: SPDM END_SESSION in the session; the PDEV stays READY until the device
 * acknowledges, then goes back to NEW.
 */
#define TSM_OP_DISCONNECT                                6

/* CommHeader.op. */
/* Nothing: no request in the buffer (written on completion of an operation). */
#define TSM_COMM_OP_NONE                                 0
/* Send payload..request_len to the device and return its response. */
#define TSM_COMM_OP_EXCHANGE                             1

/* CommHeader.protocol. */
/* No request. */
#define TSM_COMM_PROTO_NONE                              0
/*
 * A bare TDISP message (PCIe TDISP 1.0 header first), in the clear: a PDEV created without
 * PdevFlags::SPDM. The guest is told (no DEVICE_AUTHENTICATED).
 */
#define TSM_COMM_PROTO_TDISP                             1
/*
 * A plain SPDM message for the DOE CMA feature (data object type 1): the SPDM connect before the
 * session exists.
 */
#define TSM_COMM_PROTO_SPDM                              2
/*
 * A DSP0277 secured SPDM message (session ID, length, AES-256-GCM ciphertext, tag) for the DOE
 * secured-CMA feature (data object type 2): everything once the session exists, TDISP included. The
 * host cannot read or change it undetected.
 */
#define TSM_COMM_PROTO_SECURED_SPDM                      3

/* CommHeader.host_status. */
/* The device answered; payload..response_len holds the response. */
#define TSM_HOST_IO_RESPONSE                             0
/*
 * The device did not answer (DOE timeout, mailbox error, device gone). The TSM fails the operation
 * with DeviceError and puts the object in ERROR.
 */
#define TSM_HOST_IO_NO_RESPONSE                          1

/* VcpuExit.reason. */
/*
 * The guest called G_EXIT(code); the vCPU will not run again (VCPU_RUN fails with ObjectState).
 */
#define TSM_EXIT_GUEST_EXIT                              1
/*
 * The guest issued a call that needs device I/O on vdevice vdev (vdev_op: START for G_VDEV_ACCEPT,
 * STOP for G_VDEV_STOP). The host drives the operation with COMMUNICATE on vdev until it completes,
 * then runs the vCPU again; the guest's call then returns the operation's result. Running the vCPU
 * earlier exits again with the same record.
 */
#define TSM_EXIT_DEVICE_REQUEST                          2
/*
 * The guest took a fault the TSM does not resolve: an access to a GPA with no mapping (gpa, with
 * ExitFlags::GPA_VALID) or any other exception (syndrome). The host may map the page and run the
 * vCPU again (it retries the access).
 */
#define TSM_EXIT_FAULT                                   3
/*
 * The guest issued a host call (fid); it got Denied in its status register and continues after the
 * call when run again.
 */
#define TSM_EXIT_DENIED_CALL                             4
/*
 * A physical interrupt for the host arrived while the vCPU ran: the TSM stopped it so the host can
 * take the interrupt (it is delivered once the host runs with interrupts enabled). No other field
 * is set; the vCPU's state is saved and it continues where it was when run again.
 */
#define TSM_EXIT_INTERRUPT                               5

/* Event reasons. */
/* A T=0 request whose final physical address is secure memory (invariant 1). */
#define TSM_EVENT_T0_TO_SECURE                           1
/*
 * A T=1 request from a requester whose vdevice is not RUN-and-accepted by this TVM, or that has no
 * vdevice (invariant 2).
 */
#define TSM_EVENT_T1_NOT_ALLOWED                         2
/* A request with a PASID for which the guest attached no stage-1 root. */
#define TSM_EVENT_PASID_NOT_ATTACHED                     3
/* The IOVA is outside the stage-1 input range. */
#define TSM_EVENT_ADDRESS_SIZE                           4
/* Stage 1 has no valid entry for the IOVA. */
#define TSM_EVENT_S1_TRANSLATION                         5
/* The stage-1 entry forbids the access. */
#define TSM_EVENT_S1_PERMISSION                          6
/*
 * The GPA (stage-1 output, or a stage-1 table address with EventFlags::S1_WALK) is not mapped in
 * the TVM's address map.
 */
#define TSM_EVENT_S2_TRANSLATION                         7
/* The TVM's address map forbids the access. */
#define TSM_EVENT_S2_PERMISSION                          8
/*
 * The device broke the TDISP protocol or reported an error: the vdevice is now ERROR (T=1 off).
 */
#define TSM_EVENT_DEVICE_ERROR                           9


/* ---- boundary structures ---- */

/* TVM_CREATE parameters (64 bytes). */
struct tsm_tvm_params {
	/* No flag is defined in ABI 1.0: must be 0. */
	uint64_t flags; /* offset 0 */
	/*
	 * Width of the TVM's guest-physical address space in bits, within FEATURES
	 * MEMORY.min_gpa_bits..=max_gpa_bits. Every GPA argument must be below 1 << gpa_bits.
	 */
	uint8_t gpa_bits; /* offset 8 */
	/* Must be 0. */
	uint8_t reserved0[3]; /* offset 9 */
	/* The most vCPUs VCPU_CREATE will create for this TVM (at least 1). */
	uint32_t max_vcpus; /* offset 12 */
	/* Must be 0. */
	uint64_t reserved1[6]; /* offset 16 */
}; /* 64 bytes */

/*
 * PDEV_CREATE parameters (64 bytes): the device security manager (DSM) behind PF0 and the
 * requester-ID range of the functions it manages.
 */
struct tsm_pdev_params {
	/* PdevFlags; undefined bits must be 0. */
	uint64_t flags; /* offset 0 */
	/*
	 * PCI segment (domain) of the device; at most 0xFF under InterfaceIdFormat::RidSegment (the
	 * TDISP interface ID has 8 segment bits).
	 */
	uint16_t segment; /* offset 8 */
	/* Requester ID (bus << 8 | device << 3 | function) of PF0, the DSM. */
	uint16_t rid_base; /* offset 10 */
	/*
	 * Number of consecutive requester IDs from rid_base the DSM manages (its functions and
	 * VFs): at least 1, and rid_base + rid_count <= 0x1_0000.
	 */
	uint16_t rid_count; /* offset 12 */
	/* Must be 0. */
	uint16_t reserved0; /* offset 14 */
	/* InterfaceIdFormat of the device's TDISP interface IDs. */
	uint32_t interface_id_format; /* offset 16 */
	/*
	 * With PdevFlags::SPDM: the certificate slot (0..=7) whose chain authenticates the device
	 * (the host's choice; the guest sees the chain it names). 0 otherwise.
	 */
	uint32_t spdm_slot; /* offset 20 */
	/* Must be 0. */
	uint64_t reserved2[5]; /* offset 24 */
}; /* 64 bytes */

/* VDEV_CREATE parameters (64 bytes): one function of a PDEV, as the TVM will see it. */
struct tsm_vdev_params {
	/* No flag is defined in ABI 1.0: must be 0. */
	uint64_t flags; /* offset 0 */
	/*
	 * Physical requester ID of the function; within the PDEV's RID range (BdfOutOfRange
	 * otherwise) and not used by another vdevice (BdfInUse).
	 */
	uint16_t pbdf; /* offset 8 */
	/*
	 * Requester ID the TVM sees (its vPCI bus/device/function); unique in the TVM (BdfInUse).
	 * The guest ABI names the vdevice by it.
	 */
	uint16_t vbdf; /* offset 10 */
	/*
	 * TDISP INTERFACE_ID function_id of the function: must equal PdevParams::function_id(pbdf)
	 * (InvalidArgument).
	 */
	uint32_t function_id; /* offset 12 */
	/* TDISP LOCK_INTERFACE flags (LockFlags) sent at bind. */
	uint16_t lock_flags; /* offset 16 */
	/*
	 * TDISP LOCK_INTERFACE default_stream_id (the IDE stream for the interface's traffic; 0
	 * while IDE is not supported).
	 */
	uint8_t default_stream_id; /* offset 18 */
	/* Must be 0. */
	uint8_t reserved0; /* offset 19 */
	/* Must be 0. */
	uint32_t reserved1; /* offset 20 */
	/*
	 * TDISP LOCK_INTERFACE mmio_reporting_offset: added by the device to the MMIO addresses in
	 * its interface report.
	 */
	uint64_t mmio_reporting_offset; /* offset 24 */
	/*
	 * TDISP LOCK_INTERFACE bind_p2p_address_mask; must be 0 unless LockFlags::BIND_P2P is set.
	 */
	uint64_t bind_p2p_address_mask; /* offset 32 */
	/*
	 * The virtual device ID of the vIOMMU (iommufd IOMMU_VDEVICE_ALLOC.virt_id: vSID of SMMUv3,
	 * vRID of VT-d). Must be 0 under TSM_NO_VIOMMU; the TSM reports it in the guest's event
	 * records.
	 */
	uint64_t virt_id; /* offset 40 */
	/* Must be 0. */
	uint64_t reserved2[2]; /* offset 48 */
}; /* 64 bytes */

/* Header of the COMMUNICATE buffer (64 bytes). */
struct tsm_comm_header {
	/* CommOp (TSM-written). */
	uint32_t op; /* offset 0 */
	/* CommProtocol (TSM-written). */
	uint32_t protocol; /* offset 4 */
	/* Bytes of request in the payload (TSM-written). */
	uint32_t request_len; /* offset 8 */
	/*
	 * Bytes of response in the payload (host-written; at most COMM_PAYLOAD_SIZE, InvalidBuffer
	 * otherwise).
	 */
	uint32_t response_len; /* offset 12 */
	/* HostIoStatus (host-written). */
	uint32_t host_status; /* offset 16 */
	/* Must be 0 (host-written fields are checked). */
	uint32_t reserved0; /* offset 20 */
	/* Handle of the PDEV or VDEV the request belongs to (TSM-written). */
	uint64_t object; /* offset 24 */
	/*
	 * Number of the request within the operation, from 1 (TSM-written; lets a host trace and
	 * spot a replayed buffer).
	 */
	uint64_t sequence; /* offset 32 */
	/* Must be 0. */
	uint64_t reserved1[3]; /* offset 40 */
}; /* 64 bytes */

/* The COMMUNICATE buffer: one granule, granule-aligned, in host (NS) memory. */
struct tsm_comm_buffer {
	/* The header. */
	struct tsm_comm_header header; /* offset 0 */
	/* The request (TSM to device) or the response (device to TSM). */
	uint8_t payload[4032]; /* offset 64 */
}; /* 4096 bytes */

/* The exit record VCPU_RUN writes (64 bytes). */
struct tsm_vcpu_exit {
	/* ExitReason. */
	uint32_t reason; /* offset 0 */
	/* ExitFlags. */
	uint32_t flags; /* offset 4 */
	/* GUEST_EXIT: the guest's code (0 = success). */
	uint64_t code; /* offset 8 */
	/* DEVICE_REQUEST: handle of the vdevice. */
	uint64_t vdev; /* offset 16 */
	/* DEVICE_REQUEST: the DeviceOp the guest started. */
	uint32_t vdev_op; /* offset 24 */
	/* 0. */
	uint32_t reserved0; /* offset 28 */
	/*
	 * FAULT: architecture syndrome (aarch64: ESR_EL2; x86_64: vector in bits 7:0, error code in
	 * bits 63:32).
	 */
	uint64_t syndrome; /* offset 32 */
	/* FAULT with ExitFlags::GPA_VALID: the faulting GPA, granule-aligned. */
	uint64_t gpa; /* offset 40 */
	/* DENIED_CALL: the function ID the guest used. */
	uint64_t fid; /* offset 48 */
	/* 0. */
	uint64_t reserved1; /* offset 56 */
}; /* 64 bytes */

/* One sanitized event for the host (32 bytes): no guest address, no PASID. */
struct tsm_host_event {
	/* Handle of the vdevice (0 in the host-domain queue). */
	uint64_t vdev; /* offset 0 */
	/* EventReason. */
	uint32_t reason; /* offset 8 */
	/* EventFlags: only WRITE and T_BIT (EventFlags::HOST_VISIBLE). */
	uint32_t flags; /* offset 12 */
	/* Physical requester ID of the request. */
	uint16_t rid; /* offset 16 */
	/* PCI segment of the request (with rid, the requester: RIDs repeat across segments). */
	uint16_t segment; /* offset 18 */
	/* 0. */
	uint32_t reserved1; /* offset 20 */
	/* Per-queue sequence number from 1; a gap shows dropped records. */
	uint64_t sequence; /* offset 24 */
}; /* 32 bytes */

/* One full event for the guest (64 bytes). */
struct tsm_guest_event {
	/* The vdevice's vBDF. */
	uint16_t vbdf; /* offset 0 */
	/* 0. */
	uint16_t reserved0; /* offset 2 */
	/* EventReason. */
	uint32_t reason; /* offset 4 */
	/* EventFlags. */
	uint32_t flags; /* offset 8 */
	/* The request's PASID (with EventFlags::PASID_VALID). */
	uint32_t pasid; /* offset 12 */
	/* The IOVA the device used. */
	uint64_t iova; /* offset 16 */
	/* The vdevice's virt_id (vSID / vRID), as given at VDEV_CREATE. */
	uint64_t virt_id; /* offset 24 */
	/* Per-queue sequence number from 1. */
	uint64_t sequence; /* offset 32 */
	/*
	 * With EventFlags::GPA_VALID, the GPA where translation stopped, the last one stage 2 was
	 * given: with EventFlags::S1_WALK the stage-1 descriptor whose read failed; otherwise the
	 * final GPA, offset included (the stage-1 output, or the IOVA when no stage 1 applies), for
	 * S2_TRANSLATION, S2_PERMISSION, S1_PERMISSION, T0_TO_SECURE and T1_NOT_ALLOWED. 0 without
	 * the flag.
	 */
	uint64_t gpa; /* offset 40 */
	/* 0. */
	uint64_t reserved1[2]; /* offset 48 */
}; /* 64 bytes */

/* What G_VDEV_INFO writes to the guest (256 bytes). */
struct tsm_vdev_info {
	/* VdevState. */
	uint32_t state; /* offset 0 */
	/* The vdevice's vBDF (the argument the guest named it by). */
	uint16_t vbdf; /* offset 4 */
	/* TDISP version negotiated with the device (0x10 = 1.0); 0 before the PDEV is READY. */
	uint8_t tdisp_version; /* offset 6 */
	/* 0. */
	uint8_t reserved0; /* offset 7 */
	/* Length of the cached interface report in bytes (0 while none is cached). */
	uint32_t report_len; /* offset 8 */
	/*
	 * The TDISP LOCK flags the host asked for at bind (LockFlags); the guest should check them.
	 */
	uint16_t lock_flags; /* offset 12 */
	/* 0. */
	uint16_t reserved1; /* offset 14 */
	/* Number of report fetches for this vdevice so far (echo in AcceptEvidence). */
	uint64_t report_counter; /* offset 16 */
	/* ViommuType of the vIOMMU the vdevice is under. */
	uint32_t viommu_type; /* offset 24 */
	/* EvidenceFlags: what stands behind nonce, report_digest and the report. */
	uint32_t evidence_flags; /* offset 28 */
	/* The accept nonce drawn by the last VDEV_BIND (zero while UNLOCKED). */
	uint8_t nonce[32]; /* offset 32 */
	/* SHA-256 of the cached interface report (zero while none is cached). */
	uint8_t report_digest[32]; /* offset 64 */
	/*
	 * Bytes of the device's SPDM certificate chain (G_VDEV_CERT_CHAIN); 0 without
	 * DEVICE_AUTHENTICATED or while no report is cached.
	 */
	uint32_t chain_len; /* offset 96 */
	/*
	 * Bytes of the device's signed measurement record (G_VDEV_MEASUREMENTS); 0 as chain_len.
	 */
	uint32_t measurements_len; /* offset 100 */
	/* 0. */
	uint64_t reserved3[3]; /* offset 104 */
	/*
	 * SHA-384 of the certificate chain buffer (echo in AcceptEvidence); zero as chain_len.
	 */
	uint8_t chain_digest[48]; /* offset 128 */
	/* SHA-384 of the measurement record (echo in AcceptEvidence); zero as chain_len. */
	uint8_t measurements_digest[48]; /* offset 176 */
	/* 0. */
	uint64_t reserved4[4]; /* offset 224 */
}; /* 256 bytes */

/* What the guest passes to G_VDEV_ACCEPT (192 bytes): the evidence it verified, echoed. */
struct tsm_accept_evidence {
	/* VdevInfo::nonce. */
	uint8_t nonce[32]; /* offset 0 */
	/* VdevInfo::report_digest. */
	uint8_t report_digest[32]; /* offset 32 */
	/* VdevInfo::report_counter. */
	uint64_t report_counter; /* offset 64 */
	/* Must be 0. */
	uint64_t reserved[3]; /* offset 72 */
	/* VdevInfo::chain_digest. */
	uint8_t chain_digest[48]; /* offset 96 */
	/* VdevInfo::measurements_digest. */
	uint8_t measurements_digest[48]; /* offset 144 */
}; /* 192 bytes */

#endif /* TSM_ABI_H */
