/*
 * The page-fault catcher behind the probes in paging.h (see there), and
 * the checks MMU guests make with it.
 */
#include "paging.h"

volatile u32 pf_count;
volatile struct pf_record pf_last;

/* The probe instructions in paging_probe.S. */
extern char probe_read_resume[], probe_write_resume[];
extern char probe_exec_landing[];
u32 probe_call(u32 addr);

#define MAX_SITES 8

static struct {
	u32 fault, resume;
} sites[MAX_SITES];
static u32 site_count;
static u32 exec_target, exec_landing;

void pf_add_site(const void *fault, const void *resume)
{
	if (site_count == MAX_SITES) {
		check("pf_add_site: room for another probe site", 0);
		finish();
	}
	sites[site_count].fault = (u32)fault;
	sites[site_count].resume = (u32)resume;
	site_count++;
}

void pf_arm_exec(u32 target, const void *landing)
{
	exec_target = target;
	exec_landing = (u32)landing;
}

static void on_page_fault(struct frame *f)
{
	pf_last.cr2 = read_cr2();
	pf_last.error = f->error;
	pf_last.eip = f->eip;
	pf_last.cs = f->cs & 0xFFFF;
	pf_count++;

	for (u32 i = 0; i < site_count; i++) {
		if (f->eip == sites[i].fault) {
			f->eip = sites[i].resume;
			f->eax = PF_POISON;
			return;
		}
	}
	if (exec_landing && f->eip == exec_target) {
		f->eip = exec_landing;
		return;
	}
	char what[112];
	ksnprintf(what, sizeof(what), "unexpected #PF at %04x:%08x, CR2 %08x, error code %x",
		  pf_last.cs, pf_last.eip, pf_last.cr2, pf_last.error);
	check(what, 0);
	finish();
}

void pf_install(void)
{
	site_count = 0;
	pf_add_site(probe_read_fault, probe_read_resume);
	pf_add_site(probe_write_fault, probe_write_resume);
	pf_arm_exec(0, 0);
	set_handler(14, on_page_fault);
}

u32 probe_exec(u32 addr)
{
	pf_arm_exec(addr, probe_exec_landing);
	u32 v = probe_call(addr);
	pf_arm_exec(0, 0);
	return v;
}

static u32 faults_before;

void pf_begin(void) { faults_before = pf_count; }

u32 pf_since_begin(void) { return pf_count - faults_before; }

void pf_check_none(const char *what)
{
	check_eq(what, pf_since_begin(), 0);
}

void pf_check(const char *what, u32 error, u32 cr2, u32 eip)
{
	char line[160];

	ksnprintf(line, sizeof(line), "%s: one #PF", what);
	check_eq(line, pf_since_begin(), 1);
	ksnprintf(line, sizeof(line), "%s: error code 0x%x", what, error);
	check_eq(line, pf_last.error, error);
	ksnprintf(line, sizeof(line), "%s: CR2 = 0x%08x", what, cr2);
	check_eq(line, pf_last.cr2, cr2);
	if (eip) {
		ksnprintf(line, sizeof(line), "%s: saved EIP is the faulting instruction", what);
		check_eq(line, pf_last.eip, eip);
	}
}
