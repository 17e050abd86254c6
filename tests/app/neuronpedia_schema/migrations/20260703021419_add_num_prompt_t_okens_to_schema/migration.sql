-- AlterTable
ALTER TABLE "JlensShare" ADD COLUMN     "numPromptTokens" INTEGER;
