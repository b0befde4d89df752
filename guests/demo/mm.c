/*
 * Physical pages and address spaces.
 *
 * Physical pages: every usable page above the kernel image, from the
 * multiboot memory map, in a few ranges. Pages are handed out from a free
 * list of returned pages first, then by bumping through the ranges, so a
 * page is first written when it is first used (under a monitor, touching
 * all of RAM at boot would cost a shadow page fault per page). Each page
 * has a reference count: pages shared copy-on-write after fork count one
 * reference per address space.
 *
 * Address spaces: one page directory per process. The upper quarter
 * (KERNEL_BASE and up) is the same in all of them: RAM mapped with global
 * 4 MiB pages, copied from kernel_pd when a directory is made and never
 * changed after boot. The user part below USER_TOP has 4 KiB pages with
 * U=1.
 */
#include "kernel.h"

u32 kernel_pd[1024] __attribute__((aligned(PAGE_SIZE), section(".bss.page_aligned")));

/* ---- physical pages ----------------------------------------------------- */

#define MAX_RANGES 16

static struct mem_range ranges[MAX_RANGES];
static int range_count, range_next; /* ranges[range_next..] still have untouched pages */
static u32 bump;                    /* next untouched page in ranges[range_next] */
static u32 free_list;               /* physical address of a free page, 0: none */
static u32 free_count;
static u16 *refcount;               /* per page frame number */
static u32 max_pfn;

void paging_init(u32 ram_end)
{
	u32 pdes = (MIN(ram_end, DIRECT_MAP_MAX) + (1u << 22) - 1) >> 22;
	for (u32 i = 0; i < pdes; i++)
		kernel_pd[(KERNEL_BASE >> 22) + i] =
			(i << 22) | PTE_P | PTE_W | PTE_PS | PTE_A | PTE_D | PTE_G;
	/* The identity map only served the jump to KERNEL_BASE. */
	for (u32 i = 0; i < BOOT_MAP_MB / 4; i++)
		kernel_pd[i] = 0;
	write_cr3(V2P(kernel_pd));
}

void pages_init(const struct mem_range *r, int count)
{
	for (int i = 0; i < count && range_count < MAX_RANGES; i++) {
		if (r[i].end > r[i].start)
			ranges[range_count++] = r[i];
		if (r[i].end / PAGE_SIZE > max_pfn)
			max_pfn = r[i].end / PAGE_SIZE;
	}
	if (!range_count)
		panic("no usable memory");
	/* The reference counts take the first pages of the first range. */
	u32 bytes = PAGE_UP(max_pfn * sizeof(u16));
	if (ranges[0].end - ranges[0].start < bytes)
		panic("the first memory range cannot hold the page reference counts");
	refcount = P2V(ranges[0].start);
	for (u32 off = 0; off < bytes; off += PAGE_SIZE)
		page_zero((u8 *)refcount + off);
	ranges[0].start += bytes;
	bump = ranges[0].start;
	for (int i = 0; i < range_count; i++)
		free_count += (ranges[i].end - ranges[i].start) / PAGE_SIZE;
}

u32 page_alloc(void)
{
	u32 pa;
	if (free_list) {
		pa = free_list;
		free_list = *(u32 *)P2V(pa);
	} else {
		while (range_next < range_count && bump >= ranges[range_next].end) {
			if (++range_next < range_count)
				bump = ranges[range_next].start;
		}
		if (range_next >= range_count)
			return 0;
		pa = bump;
		bump += PAGE_SIZE;
	}
	free_count--;
	refcount[pa / PAGE_SIZE] = 1;
	return pa;
}

void page_ref(u32 pa)
{
	refcount[pa / PAGE_SIZE]++;
}

void page_unref(u32 pa)
{
	u16 *r = &refcount[pa / PAGE_SIZE];
	if (*r == 0)
		panic("page %x freed twice", pa);
	if (--*r)
		return;
	*(u32 *)P2V(pa) = free_list;
	free_list = pa;
	free_count++;
}

u32 pages_free(void)
{
	return free_count;
}

/* ---- page tables -------------------------------------------------------- */

static u32 *current_pd(void)
{
	return current ? current->pd : kernel_pd;
}

u32 *pd_pte(u32 *pd, u32 va, int create)
{
	u32 *pde = &pd[va >> 22];
	if (!(*pde & PTE_P)) {
		if (!create)
			return NULL;
		u32 pt = page_alloc();
		if (!pt)
			return NULL;
		page_zero(P2V(pt));
		/* Permissions are the PTEs' business. */
		*pde = pt | PTE_P | PTE_W | PTE_U;
	}
	u32 *pt = P2V(*pde & ~0xFFFu);
	return &pt[(va >> 12) & 1023];
}

u32 *pd_create(void)
{
	u32 pa = page_alloc();
	if (!pa)
		return NULL;
	u32 *pd = P2V(pa);
	page_zero(pd);
	copy_bytes(pd + (KERNEL_BASE >> 22), kernel_pd + (KERNEL_BASE >> 22),
		   (1024 - (KERNEL_BASE >> 22)) * 4);
	return pd;
}

void pd_clear_user(u32 *pd)
{
	for (u32 i = 0; i < (USER_TOP >> 22); i++) {
		if (!(pd[i] & PTE_P))
			continue;
		u32 *pt = P2V(pd[i] & ~0xFFFu);
		for (u32 j = 0; j < 1024; j++) {
			if (pt[j] & PTE_P)
				page_unref(pt[j] & ~0xFFFu);
		}
		page_unref(pd[i] & ~0xFFFu);
		pd[i] = 0;
	}
}

void pd_destroy(u32 *pd)
{
	pd_clear_user(pd);
	page_unref(V2P(pd));
}

int map_new_page(u32 *pd, u32 va, u32 flags)
{
	u32 *pte = pd_pte(pd, va, 1);
	if (!pte)
		return -1;
	if (*pte & PTE_P)
		panic("map_new_page: %x already mapped", va);
	u32 pa = page_alloc();
	if (!pa)
		return -1;
	page_zero(P2V(pa));
	/* Not present before: no TLB entry to flush. */
	*pte = pa | flags | PTE_P | PTE_U;
	return 0;
}

void unmap_page(u32 *pd, u32 va)
{
	u32 *pte = pd_pte(pd, va, 0);
	if (!pte || !(*pte & PTE_P))
		return;
	u32 pa = *pte & ~0xFFFu;
	*pte = 0;
	if (pd == current_pd())
		invlpg(va);
	page_unref(pa);
}

int pd_fork(u32 *parent, u32 *child)
{
	for (u32 i = 0; i < (USER_TOP >> 22); i++) {
		if (!(parent[i] & PTE_P))
			continue;
		u32 *ppt = P2V(parent[i] & ~0xFFFu);
		u32 cpt_pa = page_alloc();
		if (!cpt_pa)
			return -1;
		u32 *cpt = P2V(cpt_pa);
		child[i] = cpt_pa | PTE_P | PTE_W | PTE_U;
		for (u32 j = 0; j < 1024; j++) {
			u32 pte = ppt[j];
			if (pte & PTE_P) {
				if (pte & (PTE_W | PTE_COW)) {
					pte = (pte & ~PTE_W) | PTE_COW;
					ppt[j] = pte;
				}
				page_ref(pte & ~0xFFFu);
			}
			cpt[j] = pte;
		}
	}
	return 0;
}

/* ---- user memory -------------------------------------------------------- */

u32 *user_page(struct proc *p, u32 va, int write)
{
	if (va < USER_MIN || va >= USER_TOP)
		return NULL;
	u32 *pte = pd_pte(p->pd, va, 0);
	if (!pte || !(*pte & PTE_P)) {
		/* Demand-zero stack, below USER_TOP and above the heap. */
		u32 bottom = USER_TOP - USER_STACK_MAX;
		if (va < bottom || va < PAGE_UP(p->brk))
			return NULL;
		if (map_new_page(p->pd, PAGE_DOWN(va), PTE_W) < 0)
			return NULL;
		kstats.demand_pages++;
		return pd_pte(p->pd, va, 0);
	}
	if (!write || (*pte & PTE_W))
		return pte;
	if (!(*pte & PTE_COW))
		return NULL; /* a write to a read-only page */

	u32 pa = *pte & ~0xFFFu;
	u32 flags = (*pte & 0xFFFu & ~PTE_COW) | PTE_W;
	if (refcount[pa / PAGE_SIZE] > 1) {
		/* Still shared: this address space gets its own copy. */
		u32 copy = page_alloc();
		if (!copy)
			return NULL;
		page_copy(P2V(copy), P2V(pa));
		page_unref(pa);
		pa = copy;
		kstats.cow_copies++;
	} else {
		kstats.cow_reuses++;
	}
	/* The last sharer keeps the page itself, now writable again. */
	*pte = pa | flags;
	if (p->pd == current_pd())
		invlpg(PAGE_DOWN(va));
	return pte;
}

/* Copies between kbuf and [uva, uva + n) in p's memory, page by page. */
static int user_copy(struct proc *p, u32 uva, u8 *kbuf, u32 n, int to_user)
{
	if (uva + n < uva || uva + n > USER_TOP)
		return -1;
	while (n) {
		u32 off = uva & (PAGE_SIZE - 1);
		u32 chunk = MIN(n, PAGE_SIZE - off);
		u32 *pte = user_page(p, uva, to_user);
		if (!pte)
			return -1;
		u8 *page = P2V(*pte & ~0xFFFu);
		if (to_user)
			copy_bytes(page + off, kbuf, chunk);
		else
			copy_bytes(kbuf, page + off, chunk);
		uva += chunk;
		kbuf += chunk;
		n -= chunk;
	}
	return 0;
}

int copyout(struct proc *p, u32 uva, const void *src, u32 n)
{
	return user_copy(p, uva, (u8 *)src, n, 1);
}

int copyin(struct proc *p, void *dst, u32 uva, u32 n)
{
	return user_copy(p, uva, dst, n, 0);
}

int copyinstr(struct proc *p, char *dst, u32 uva, u32 max)
{
	for (u32 i = 0; i < max; i++) {
		if (copyin(p, &dst[i], uva + i, 1) < 0)
			return -1;
		if (!dst[i])
			return (int)i;
	}
	return -1;
}
