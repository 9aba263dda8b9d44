package power

// The NVML binding: libnvidia-ml.so.1 opened with dlopen on first use and
// the eleven functions the meters call resolved by their ABI names (the
// versioned ones where NVML has several), so that binaries build without
// the NVIDIA library and start on machines without it. It declares only
// what it calls, from the NVML API reference, so the build prints no
// warnings (github.com/NVIDIA/go-nvml, used before, compiles nvml.h's
// deprecated functions too and printed 147 lines of them).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

typedef int at_nvmlReturn;              // nvmlReturn_t
typedef void *at_nvmlDevice;            // nvmlDevice_t, an opaque handle
typedef struct {                        // nvmlMemory_t
	unsigned long long total, free, used;
} at_nvmlMemory;

enum { AT_NVML_LIBRARY_NOT_FOUND = 12, AT_NVML_FUNCTION_NOT_FOUND = 13 };

// at_nvml is one loaded library's functions.
typedef struct {
	at_nvmlReturn (*init)(void);
	at_nvmlReturn (*count)(unsigned int *);
	at_nvmlReturn (*handle)(unsigned int, at_nvmlDevice *);
	at_nvmlReturn (*driver)(char *, unsigned int);
	at_nvmlReturn (*cuda)(int *);
	at_nvmlReturn (*name)(at_nvmlDevice, char *, unsigned int);
	at_nvmlReturn (*uuid)(at_nvmlDevice, char *, unsigned int);
	at_nvmlReturn (*memory)(at_nvmlDevice, at_nvmlMemory *);
	at_nvmlReturn (*limit)(at_nvmlDevice, unsigned int *);
	at_nvmlReturn (*power)(at_nvmlDevice, unsigned int *);
	at_nvmlReturn (*energy)(at_nvmlDevice, unsigned long long *);
} at_nvml;

// at_nvml_open loads the library at path, resolves every function into
// *out (allocated here, never freed: the library stays loaded) and
// initialises NVML.
static at_nvmlReturn at_nvml_open(const char *path, at_nvml **out) {
	void *lib = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
	if (lib == NULL) {
		return AT_NVML_LIBRARY_NOT_FOUND;
	}
	at_nvml *t = calloc(1, sizeof *t);
	if (t == NULL) {
		return 20; // NVML_ERROR_MEMORY
	}
	struct { void **fn; const char *name; } syms[] = {
		{(void **)&t->init, "nvmlInit_v2"},
		{(void **)&t->count, "nvmlDeviceGetCount_v2"},
		{(void **)&t->handle, "nvmlDeviceGetHandleByIndex_v2"},
		{(void **)&t->driver, "nvmlSystemGetDriverVersion"},
		{(void **)&t->cuda, "nvmlSystemGetCudaDriverVersion"},
		{(void **)&t->name, "nvmlDeviceGetName"},
		{(void **)&t->uuid, "nvmlDeviceGetUUID"},
		{(void **)&t->memory, "nvmlDeviceGetMemoryInfo"},
		{(void **)&t->limit, "nvmlDeviceGetEnforcedPowerLimit"},
		{(void **)&t->power, "nvmlDeviceGetPowerUsage"},
		{(void **)&t->energy, "nvmlDeviceGetTotalEnergyConsumption"},
	};
	for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
		*syms[i].fn = dlsym(lib, syms[i].name);
		if (*syms[i].fn == NULL) {
			free(t);
			dlclose(lib);
			return AT_NVML_FUNCTION_NOT_FOUND;
		}
	}
	*out = t;
	return t->init();
}

// cgo cannot call through a function pointer; these do.
static at_nvmlReturn at_nvml_count(at_nvml *t, unsigned int *n) { return t->count(n); }
static at_nvmlReturn at_nvml_handle(at_nvml *t, unsigned int i, at_nvmlDevice *d) { return t->handle(i, d); }
static at_nvmlReturn at_nvml_driver(at_nvml *t, char *s, unsigned int n) { return t->driver(s, n); }
static at_nvmlReturn at_nvml_cuda(at_nvml *t, int *v) { return t->cuda(v); }
static at_nvmlReturn at_nvml_name(at_nvml *t, at_nvmlDevice d, char *s, unsigned int n) { return t->name(d, s, n); }
static at_nvmlReturn at_nvml_uuid(at_nvml *t, at_nvmlDevice d, char *s, unsigned int n) { return t->uuid(d, s, n); }
static at_nvmlReturn at_nvml_memory(at_nvml *t, at_nvmlDevice d, at_nvmlMemory *m) { return t->memory(d, m); }
static at_nvmlReturn at_nvml_limit(at_nvml *t, at_nvmlDevice d, unsigned int *mw) { return t->limit(d, mw); }
static at_nvmlReturn at_nvml_power(at_nvml *t, at_nvmlDevice d, unsigned int *mw) { return t->power(d, mw); }
static at_nvmlReturn at_nvml_energy(at_nvml *t, at_nvmlDevice d, unsigned long long *mj) { return t->energy(d, mj); }
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// nvmlReturn is an NVML status code (nvmlReturn_t); the codes other than
// nvmlSuccess are errors.
type nvmlReturn int32

// The status codes the meters tell apart.
const (
	nvmlSuccess          nvmlReturn = 0
	nvmlInvalidArgument  nvmlReturn = 2
	nvmlNotSupported     nvmlReturn = 3
	nvmlDriverNotLoaded  nvmlReturn = 9
	nvmlLibraryNotFound  nvmlReturn = 12
	nvmlFunctionNotFound nvmlReturn = 13
	nvmlUnknown          nvmlReturn = 999
)

// nvmlMessages are nvmlErrorString's texts, for the codes a meter may meet.
var nvmlMessages = map[nvmlReturn]string{
	0: "success", 1: "uninitialized", 2: "invalid argument", 3: "not supported", 4: "insufficient permissions",
	6: "not found", 7: "insufficient size", 8: "insufficient external power", 9: "driver not loaded", 10: "timeout",
	12: "NVML shared library not found", 13: "an NVML function is missing (driver too old)", 14: "corrupted infoROM", 15: "GPU is lost",
	16: "GPU requires reset", 17: "GPU access blocked by the operating system",
	18: "driver/library version mismatch", 19: "in use by another client", 20: "insufficient memory",
	21: "no data", 26: "deprecated", 27: "system not ready", 28: "GPU not found", 999: "unknown error",
}

func (r nvmlReturn) Error() string {
	if s, ok := nvmlMessages[r]; ok {
		return s
	}
	return fmt.Sprintf("NVML error %d", int32(r))
}

// nvmlMemory is a device's memory in bytes.
type nvmlMemory struct{ Total, Free, Used uint64 }

// nvmlAPI is the part of NVML the meters use: the library itself
// (libNVML), or a fake in tests.
type nvmlAPI interface {
	Init() nvmlReturn
	DeviceGetCount() (int, nvmlReturn)
	DeviceGetHandleByIndex(index int) (nvmlDevice, nvmlReturn)
	SystemGetDriverVersion() (string, nvmlReturn)
	SystemGetCudaDriverVersion() (int, nvmlReturn) // 1000×major + 10×minor
}

// nvmlDevice is one GPU's handle. Powers are in milliwatts, energy in
// millijoules.
type nvmlDevice interface {
	GetName() (string, nvmlReturn)
	GetUUID() (string, nvmlReturn)
	GetMemoryInfo() (nvmlMemory, nvmlReturn)
	GetEnforcedPowerLimit() (uint32, nvmlReturn)
	GetPowerUsage() (uint32, nvmlReturn)
	GetTotalEnergyConsumption() (uint64, nvmlReturn)
}

// libNVML is the NVML shared library at Path. Init must succeed before any
// other call.
type libNVML struct {
	Path string
	t    *C.at_nvml
}

func (l *libNVML) Init() nvmlReturn {
	p := C.CString(l.Path)
	defer C.free(unsafe.Pointer(p))
	return nvmlReturn(C.at_nvml_open(p, &l.t))
}

func (l *libNVML) DeviceGetCount() (int, nvmlReturn) {
	var n C.uint
	r := nvmlReturn(C.at_nvml_count(l.t, &n))
	return int(n), r
}

func (l *libNVML) DeviceGetHandleByIndex(index int) (nvmlDevice, nvmlReturn) {
	if index < 0 {
		return nil, nvmlInvalidArgument
	}
	var d C.at_nvmlDevice
	if r := nvmlReturn(C.at_nvml_handle(l.t, C.uint(index), &d)); r != nvmlSuccess {
		return nil, r
	}
	return libDevice{l.t, d}, nvmlSuccess
}

// nvmlString reads a string NVML writes into a buffer of n bytes (n is at
// least the header's NVML_*_BUFFER_SIZE for that string).
func nvmlString(n int, get func(*C.char, C.uint) C.at_nvmlReturn) (string, nvmlReturn) {
	buf := (*C.char)(C.calloc(C.size_t(n), 1))
	defer C.free(unsafe.Pointer(buf))
	if r := nvmlReturn(get(buf, C.uint(n))); r != nvmlSuccess {
		return "", r
	}
	return C.GoString(buf), nvmlSuccess
}

func (l *libNVML) SystemGetDriverVersion() (string, nvmlReturn) {
	return nvmlString(80, func(s *C.char, n C.uint) C.at_nvmlReturn { return C.at_nvml_driver(l.t, s, n) })
}

func (l *libNVML) SystemGetCudaDriverVersion() (int, nvmlReturn) {
	var v C.int
	r := nvmlReturn(C.at_nvml_cuda(l.t, &v))
	return int(v), r
}

// libDevice is a device handle of a libNVML.
type libDevice struct {
	t *C.at_nvml
	h C.at_nvmlDevice
}

func (d libDevice) GetName() (string, nvmlReturn) {
	return nvmlString(96, func(s *C.char, n C.uint) C.at_nvmlReturn { return C.at_nvml_name(d.t, d.h, s, n) })
}

func (d libDevice) GetUUID() (string, nvmlReturn) {
	return nvmlString(96, func(s *C.char, n C.uint) C.at_nvmlReturn { return C.at_nvml_uuid(d.t, d.h, s, n) })
}

func (d libDevice) GetMemoryInfo() (nvmlMemory, nvmlReturn) {
	var m C.at_nvmlMemory
	r := nvmlReturn(C.at_nvml_memory(d.t, d.h, &m))
	return nvmlMemory{uint64(m.total), uint64(m.free), uint64(m.used)}, r
}

func (d libDevice) GetEnforcedPowerLimit() (uint32, nvmlReturn) {
	var mw C.uint
	r := nvmlReturn(C.at_nvml_limit(d.t, d.h, &mw))
	return uint32(mw), r
}

func (d libDevice) GetPowerUsage() (uint32, nvmlReturn) {
	var mw C.uint
	r := nvmlReturn(C.at_nvml_power(d.t, d.h, &mw))
	return uint32(mw), r
}

func (d libDevice) GetTotalEnergyConsumption() (uint64, nvmlReturn) {
	var mj C.ulonglong
	r := nvmlReturn(C.at_nvml_energy(d.t, d.h, &mj))
	return uint64(mj), r
}
