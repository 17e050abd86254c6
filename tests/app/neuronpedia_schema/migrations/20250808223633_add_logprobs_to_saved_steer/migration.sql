-- AlterTable
ALTER TABLE "SteerOutput" ADD COLUMN     "logprobs" TEXT;
