// A fleet header (`attune tune-merge --header`): two machines' tables compiled into one build,
// the one for the machine it runs on chosen at start-up. The header is generated at build time
// by tuned_fixture_gen (a stand-in AVX2-only machine, then this machine) and compiled here, in
// its own translation unit (test_tuned_dispatch.cpp compiles the single-machine fixture).
#include "attune_tuned_fleet.h"
#include "records.hpp"
#include "reference.hpp"
#include "tuned_impl.hpp"
#include "tuning_file.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

namespace {

static_assert(ATTUNE_TUNED_MACHINES == 1);

std::string block_q_of_auto() {
  const attune::Problem p = attune::reference::shape(8, 8, 128, 128, 64, false);
  const attune::Choice c = attune::resolve(p);
  return std::string(c.kernel->name()) + "/" + std::string(attune::to_string(c.isa)) + "/bq" +
         std::to_string(c.config.block_q);
}

class FleetHeader : public testing::Test {
 protected:
  void SetUp() override { attune::load_tuning(""); }
  void TearDown() override {
    attune::detail::set_machine_signature_for_testing(nullptr);
    attune::detail::use_tuned_table(nullptr);
  }
  // The table start-up would build for machine `m`, then made the one dispatch reads.
  void run_on(const attune::MachineSignature& m) {
    attune::detail::set_machine_signature_for_testing(&m);
    table_ = attune::detail::fleet_table(std::span<const attune::TunedMachine>(attune::tuned_data::kMachines),
                                         attune::tuned_data::kSignature);
    attune::detail::use_tuned_table(&table_);
  }
  attune::TunedTable table_;
};

TEST_F(FleetHeader, HoldsBothMachinesOfThisBuild) {
  ASSERT_EQ(attune::tuned_data::kMachines.size(), 2u);
  EXPECT_STREQ(attune::tuned_data::kMachines[0].cpu, "Fleet Test AVX2 CPU");
  EXPECT_STRNE(attune::tuned_data::kMachines[1].cpu, "");  // the machine the build ran on
  EXPECT_EQ(std::string(attune::tuned_data::kSignature), attune::build_signature());
  EXPECT_TRUE(attune::tuned_data::kEntries.empty());  // older readers see no single table
}

TEST_F(FleetHeader, EachMachineDispatchesToItsOwnEntries) {
  const auto& k = attune::tuned_data::kMachines;
  const attune::MachineSignature avx2{k[0].cpu, k[0].isas, k[0].cores, k[0].l1d, k[0].l2, k[0].l3};
  // Machine 1 is the one the fixture was generated on (this one, unless the test is emulated).
  const attune::MachineSignature here{k[1].cpu, k[1].isas, k[1].cores, k[1].l1d, k[1].l2, k[1].l3};
  run_on(here);
  EXPECT_EQ(block_q_of_auto(), "flash/scalar/bq4");
  EXPECT_NE(attune::tuned_table_summary().find("fleet header: machine 1 of 2 (exact match)"), std::string::npos)
      << attune::tuned_table_summary();
  run_on(avx2);
  EXPECT_EQ(block_q_of_auto(), "flash/scalar/bq3");
  EXPECT_NE(attune::tuned_table_summary().find("machine 0 of 2 (exact match)"), std::string::npos);
  // Another AVX2 machine (more cores, a larger L3): the nearest with its ISA set.
  attune::MachineSignature bigger = avx2;
  bigger.cpu = "Some AVX2 CPU";
  bigger.cores = 64;
  bigger.l3 = 256 << 20;
  run_on(bigger);
  EXPECT_EQ(block_q_of_auto(), "flash/scalar/bq3");
  EXPECT_NE(attune::tuned_table_summary().find("machine 0 of 2 (nearest: same ISA set"), std::string::npos);
  // An ISA set neither has (scalar alone: on aarch64 this build's set is "neon scalar"): no
  // entries, the defaults, and info says so.
  attune::MachineSignature other{"A scalar-only CPU", "scalar", 8, 64 << 10, 1 << 20, 32 << 20};
  run_on(other);
  EXPECT_EQ(attune::resolve(attune::reference::shape(8, 8, 128, 128, 64, false)).config.block_q, 0);
  EXPECT_NE(attune::tuned_table_summary().find("fleet header: none of 2 machines"), std::string::npos)
      << attune::tuned_table_summary();
}

TEST_F(FleetHeader, TheGeneratorRefusesMachinesOfAnotherBuild) {
  std::vector<attune::detail::MachineTable> fleet(2);
  fleet[0].signature = attune::build_signature();
  fleet[1].signature = "fnv1a64:0000000000000000";
  EXPECT_THROW(attune::tuner::generate_fleet_header(fleet, "x"), attune::IoError);
  EXPECT_THROW(attune::tuner::generate_fleet_header({}, "x"), attune::IoError);
}

}  // namespace
