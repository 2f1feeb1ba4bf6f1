// fedseg::RawVector<T>: a std::vector whose resize() and size constructor leave
// trivially constructible elements uninitialised, and whose large allocations
// (4 MiB and more) are 2 MiB-aligned and marked for transparent huge pages. For
// the big buffers written in full right after allocation (decoded volumes,
// converted tensors): zero-filling them and faulting them in 4 KiB pages cost
// more than the work itself (measured on fedseg-prep: 54k page faults a case).
#pragma once

#include <sys/mman.h>

#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace fedseg {

template <class T, class A = std::allocator<T>>
class DefaultInitAllocator : public A {
  using traits = std::allocator_traits<A>;

 public:
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U, typename traits::template rebind_alloc<U>>;
  };
  using A::A;
  DefaultInitAllocator() = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U, typename traits::template rebind_alloc<U>>& o) noexcept : A(o) {}

  using value_type = typename traits::value_type;

  value_type* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(value_type);
    if (bytes < (std::size_t(4) << 20)) return A::allocate(n);
    void* p = nullptr;
    const std::size_t huge = std::size_t(2) << 20;
    if (posix_memalign(&p, huge, (bytes + huge - 1) / huge * huge) != 0) throw std::bad_alloc();
    ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
    return static_cast<value_type*>(p);
  }
  void deallocate(value_type* p, std::size_t n) noexcept {
    if (n * sizeof(value_type) < (std::size_t(4) << 20))
      A::deallocate(p, n);
    else
      std::free(p);
  }

  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;  // default-initialisation: no zeroing
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    traits::construct(static_cast<A&>(*this), p, std::forward<Args>(args)...);
  }
};

template <class T>
using RawVector = std::vector<T, DefaultInitAllocator<T>>;

}  // namespace fedseg
