-- AlterTable
ALTER TABLE "JlensShare" ADD COLUMN     "steerMode" TEXT,
ADD COLUMN     "swapToken" TEXT;
